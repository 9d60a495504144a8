package vhostuser

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// slowDevice blocks the requests whose readable bytes start with "slow"
// until release is closed.
func slowDevice(queues int) (*echoDevice, chan struct{}) {
	release := make(chan struct{})
	dev := &echoDevice{queues: queues, lim: bigLimits()}
	dev.handled = func(_ int, c *Chain) {
		if len(c.Readable) > 0 && bytes.HasPrefix(c.Readable[0], []byte("slow")) {
			<-release
		}
	}
	return dev, release
}

// A stop that times out while a dispatcher waits for a busy worker must not
// crash the daemon when the frontend then hangs up (it used to close the
// job channel under the blocked dispatcher: "send on closed channel").
func TestBackendHangupWithDispatcherWaitingForWorker(t *testing.T) {
	dev, release := slowDevice(2)
	h := newHarness(t, dev, Config{Workers: 1, DrainTimeout: 50 * time.Millisecond}, vut.FeatureVersion1)
	q := h.queue(1, 16, region0)
	// One request runs in the only worker, one waits in the job queue and
	// the third holds the dispatcher at the send.
	for range 3 {
		_, err := q.Submit([][]byte{[]byte("slow")}, []int{4})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return dev.active.Load() == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	h.f.Conn.Close()
	// Past the drain timeout the backend gives up on the stuck requests.
	time.Sleep(200 * time.Millisecond)
	close(release)
	select {
	case err := <-h.serve:
		require.NoError(t, err)
		h.serve <- nil // for the harness's cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("backend did not stop after the frontend hung up")
	}
}

// After a stop that timed out, a device reset and a new ring, a request of
// the old run that completes late must not touch either ring: the new
// ring's used->idx counts only its own requests.
func TestBackendStaleCompletionAfterReset(t *testing.T) {
	for _, workers := range []int{0, 2} {
		t.Run(map[int]string{0: "inline", 2: "workers"}[workers], func(t *testing.T) {
			dev, release := slowDevice(2)
			const drain = 2 * time.Second
			h := newHarness(t, dev, Config{Workers: workers, DrainTimeout: drain}, vut.FeatureVersion1|vut.FeatureEventIdx)
			old := h.queue(1, 16, region0)
			_, err := old.Submit([][]byte{[]byte("slow")}, []int{4})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return dev.active.Load() == 1 }, 5*time.Second, time.Millisecond)

			// The guest reboots: QEMU resets the device and sets it up again.
			start := time.Now()
			require.NoError(t, h.f.Do(vut.ResetDevice, nil))
			require.GreaterOrEqual(t, time.Since(start), drain, "reset did not wait for the request in flight")
			_, err = h.f.Negotiate(vut.FeatureVersion1|vut.FeatureEventIdx, vut.ProtocolReplyAck|vut.ProtocolMQ)
			require.NoError(t, err)
			require.NoError(t, h.f.SetMemTable())
			fresh := h.queue(1, 16, region1)
			for i := range 2 {
				_, err := fresh.Do([][]byte{{byte('a' + i)}}, []int{1})
				require.NoError(t, err)
			}

			// A run that has nothing in flight stops at once, however long
			// the old run's request takes.
			start = time.Now()
			_, err = h.f.Call(vut.GetVringBase, State(1, 0))
			require.NoError(t, err)
			require.Less(t, time.Since(start), drain/2, "stopping the new run waited for the old run's request")
			require.NoError(t, h.f.Do(vut.SetVringBase, State(1, 2)))
			require.NoError(t, h.f.Do(vut.SetVringKick, vut.U64(1), fresh.Kick))
			require.NoError(t, h.f.Do(vut.SetVringEnable, State(1, 1)))

			close(release)
			require.Eventually(t, func() bool { return dev.active.Load() == 0 }, 5*time.Second, time.Millisecond)
			time.Sleep(20 * time.Millisecond)
			_, err = fresh.Do([][]byte{[]byte("c")}, []int{1})
			require.NoError(t, err)
			require.EqualValues(t, 3, fresh.UsedIdx(), "the new ring's used->idx counts a request of the old run")
			require.EqualValues(t, 0, old.UsedIdx(), "a request of the old run completed into the old ring after the reset")
		})
	}
}
