package fsdaemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIdleReleaserReleasesWhenQuietAfterWork(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	for _, tc := range []struct {
		name string
		// allocated in each period, from a start at 0
		periods []uint64
		want    []bool
	}{
		{"idle from the start: nothing to give back", []uint64{0, 0, 0}, []bool{false, false, false}},
		{"a burst, then a quiet period: release once", []uint64{3 * mib, 0, 0}, []bool{false, true, false}},
		{"still busy: no release while requests come", []uint64{2 * mib, 2 * mib, 2 * mib}, []bool{false, false, false}},
		{"a trickle below the quiet bound counts towards a release", []uint64{60 * kib, 900 * kib, 60 * kib, 60 * kib, 0}, []bool{false, false, false, true, false}},
		{"quiet but too little allocated since the last release", []uint64{2 * mib, 0, 500 * kib, 0}, []bool{false, true, false, false}},
		{"a second burst: a second release", []uint64{2 * mib, 0, 2 * mib, 10 * kib}, []bool{false, true, false, true}},
		{"exactly the quiet bound is busy", []uint64{2 * mib, quietAllocBytes, 0}, []bool{false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newIdleReleaser(0)
			var total uint64
			var got []bool
			for _, a := range tc.periods {
				total += a
				got = append(got, r.observe(total))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// releaseWhenIdle reads the runtime's real allocation counter: garbage made
// here, then a quiet spell, makes it release; it stops with its context.
func TestReleaseWhenIdleReleasesAfterAllocation(t *testing.T) {
	var releases atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseWhenIdle(ctx, 20*time.Millisecond, func() { releases.Add(1) })
	}()
	// Busy for several periods (whenever the releaser takes its first
	// reading), then quiet.
	for range 8 {
		for range 8 {
			garbage = append(garbage, make([]byte, 64<<10))
		}
		garbage = nil
		time.Sleep(10 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return releases.Load() > 0 }, 10*time.Second, 10*time.Millisecond,
		"no release after 4 MiB allocated and a quiet period")
	cancel()
	<-done
}

// garbage keeps the test's allocations on the heap.
var garbage [][]byte
