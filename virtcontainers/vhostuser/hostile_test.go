package vhostuser

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// testLogger returns a context whose logger records every entry.
func testLogger() (context.Context, *logtest.Hook) {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	return log.WithLogger(context.Background(), logrus.NewEntry(logger)), hook
}

func countMsg(hook *logtest.Hook, msg string) int {
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Message == msg {
			n++
		}
	}
	return n
}

// A guest that keeps sending broken chains gets them back unused, but the
// host's log sees one warning per queue and interval, not one per chain.
func TestBackendRateLimitsBadChainWarnings(t *testing.T) {
	ctx, hook := testLogger()
	dev := &echoDevice{queues: 2, lim: bigLimits()}
	h := newHarnessCtx(t, ctx, dev, Config{}, vut.FeatureVersion1)
	for _, qi := range []uint32{0, 1} {
		q := h.queue(qi, 16, []uint64{region0, region1}[qi])
		for range 30 {
			u := rawChain(t, q, 0, map[uint16]vut.Desc{0: {Addr: 0x8000_0000, Len: 8}})
			require.Zero(t, u.Len)
		}
	}
	require.Zero(t, dev.calls.Load())
	require.Equal(t, 2, countMsg(hook, "virtqueue: bad descriptor chain; returned unused"),
		"want one warning per queue for 60 bad chains")
}

// A queue kept busy by the guest must not go on translating chains through
// a memory table the frontend has replaced: after REM_MEM_REG a chain in
// the removed region is returned unused even if it was made available
// before the dispatcher went back to wait for a kick.
func TestBackendBusyQueueSeesNewMemoryTable(t *testing.T) {
	dev, release := slowDevice(1)
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	q := h.queue(0, 16, region0)
	slow, err := q.Submit([][]byte{[]byte("slow")}, []int{4})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return dev.active.Load() == 1 }, 5*time.Second, time.Millisecond)
	// While the dispatcher serves that one, the guest makes a chain in
	// region 1 available; then the frontend removes region 1.
	q.PutDesc(q.DescGPA, 10, vut.Desc{Addr: region1, Len: 4, Flags: vut.DescNext, Next: 11})
	q.PutDesc(q.DescGPA, 11, vut.Desc{Addr: region1 + 64, Len: 4, Flags: vut.DescWrite})
	q.Publish(10)
	memReg := func(r vut.Region) []byte { return append(make([]byte, 8), vut.MemTablePayload([]vut.Region{r})[8:]...) }
	require.NoError(t, h.f.Do(vut.RemMemReg, memReg(h.f.Regions[1]), h.f.MemFD))
	close(release)
	_, err = q.Wait(5*time.Second, slow, &vut.Pending{Head: 10})
	require.NoError(t, err)
	require.EqualValues(t, 1, dev.calls.Load(), "a chain in removed memory reached the device")
}

// Kick and call fds must be eventfds: anything else (a pipe, a file) is
// refused when it arrives instead of failing in the dispatcher later.
func TestBackendRefusesNonEventfdKickAndCall(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	file, err := os.CreateTemp(t.TempDir(), "kick")
	require.NoError(t, err)
	t.Cleanup(func() { file.Close() })
	for _, tc := range []struct {
		name string
		fd   int
	}{
		{"pipe", p[0]},
		{"regular_file", int(file.Fd())},
		{"memfd", h.f.MemFD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.f.Do(vut.SetVringCall, vut.U64(0), tc.fd)
			require.Error(t, err, "call fd accepted")
			err = h.f.Do(vut.SetVringKick, vut.U64(0), tc.fd)
			require.Error(t, err, "kick fd accepted")
		})
	}
	// Eventfds still work.
	q := h.queue(0, 16, region0)
	got, err := q.Do([][]byte{[]byte("ok")}, []int{2})
	require.NoError(t, err)
	require.Equal(t, "ko", string(got))
}

// Rings must be aligned where the backend maps them, not only in the
// frontend's address space: used->idx and avail->idx are accessed
// atomically, which faults on arm64 when misaligned.
func TestBackendRefusesRingsMisalignedInItsMapping(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	// The region's frontend address is 2 bytes off a page, so addresses
	// that look aligned to the frontend are 2 bytes off in our mapping.
	const ua = 0x1000_0002
	f, err := vut.NewFrontend(front, []vut.Region{{GPA: 0, Size: 4 * mib, UserAddr: ua}})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- NewBackend(dev, Config{}).Serve(context.Background(), back) }()
	t.Cleanup(func() { f.Close(); <-done })
	_, err = f.Negotiate(vut.FeatureVersion1, vut.ProtocolReplyAck)
	require.NoError(t, err)
	require.NoError(t, f.SetMemTable())
	addr := State(0, 0)
	for _, v := range []uint64{ua + 0x0ffe, ua + 0x2ffe, ua + 0x1ffe, 0} { // desc, used, avail
		addr = append(addr, vut.U64(v)...)
	}
	require.NoError(t, f.Do(vut.SetVringNum, State(0, 16)))
	require.NoError(t, f.Do(vut.SetVringAddr, addr))
	require.NoError(t, f.Do(vut.SetVringEnable, State(0, 1)))
	require.NoError(t, f.Do(vut.SetVringCall, vut.U64(0), eventfd(t)))
	require.Error(t, f.Do(vut.SetVringKick, vut.U64(0), eventfd(t)), "rings misaligned in the backend's mapping were started")
}

func TestBackendRefusesTooManyWorkers(t *testing.T) {
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	defer front.Close()
	defer back.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = NewBackend(&echoDevice{queues: 1}, Config{Workers: MaxWorkers + 1}).Serve(ctx, back)
	require.ErrorContains(t, err, "1025 workers, want 0 to 1024")
}
