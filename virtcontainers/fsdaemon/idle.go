package fsdaemon

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A daemon gives its free heap back to the kernel once its guest goes quiet.
//
// A burst of requests leaves the heap at its high-water mark (go-fuse
// allocates about 1 KiB per request), and Go returns that memory only
// slowly: its scavenger keeps what the last collection's heap goal allows,
// and a daemon that no longer allocates collects next when the runtime
// forces it, two minutes later. A Kata host runs one daemon per sandbox,
// idle most of its life. Measured after the daemon-direct workloads (pool 1,
// parent and sandboxed child; BENCHMARKS.md): anonymous memory 5 s after
// the last request 5.8 MiB without this, 4.6 MiB with it (Rust virtiofsd:
// 5.4); without it, 4.8 MiB only after two and a half minutes.
//
// The check is a runtime/metrics read once a second, off the request path;
// a release is one forced collection and scavenge of a heap of a few MiB,
// at most once per idleCheckPeriod and only after releaseAfterBytes of
// allocation.
const (
	idleCheckPeriod = time.Second
	// quietAllocBytes: a period that allocated less than this is quiet
	// (a few dozen requests).
	quietAllocBytes = 64 << 10
	// releaseAfterBytes: what must have been allocated since the last
	// release (about a thousand requests) for another to be worth it.
	releaseAfterBytes = 1 << 20
)

// idleReleaser decides, from the process's total allocated bytes read once
// per period, when the heap's free pages go back to the kernel.
type idleReleaser struct {
	last, sinceRelease uint64
}

func newIdleReleaser(total uint64) *idleReleaser { return &idleReleaser{last: total} }

// observe takes one period's reading of the total and reports whether to
// release now: the period was quiet after enough allocation.
func (r *idleReleaser) observe(total uint64) bool {
	delta := total - r.last
	r.last = total
	r.sinceRelease += delta
	if delta >= quietAllocBytes || r.sinceRelease < releaseAfterBytes {
		return false
	}
	r.sinceRelease = 0
	return true
}

// releaseWhenIdle runs until ctx ends, calling release whenever
// idleReleaser says so.
func releaseWhenIdle(ctx context.Context, period time.Duration, release func()) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	r := newIdleReleaser(allocated())
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r.observe(allocated()) {
				release()
			}
		}
	}
}

// startIdleRelease starts releaseWhenIdle for the daemon serving in this
// process: compact (the file system's tables giving back what they kept from
// a larger past), then debug.FreeOSMemory. The returned func stops it.
func startIdleRelease(ctx context.Context, compact func() int) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseWhenIdle(ctx, idleCheckPeriod, func() {
			compact()
			debug.FreeOSMemory()
		})
	}()
	return func() { cancel(); <-done }
}
