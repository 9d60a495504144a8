package vhostuser

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// echoDevice writes back the readable bytes reversed.
type echoDevice struct {
	queues  int
	lim     Limits
	calls   atomic.Int64
	active  atomic.Int64
	peak    atomic.Int64
	hold    chan struct{} // when set, Handle waits on it
	handled func(q int, c *Chain)
}

func (d *echoDevice) NumQueues() int   { return d.queues }
func (d *echoDevice) Features() uint64 { return 0 }
func (d *echoDevice) Limits() Limits   { return d.lim }

func (d *echoDevice) Handle(_ context.Context, q int, c *Chain) uint32 {
	d.calls.Add(1)
	n := d.active.Add(1)
	defer d.active.Add(-1)
	for {
		p := d.peak.Load()
		if n <= p || d.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if d.hold != nil {
		<-d.hold
	}
	if d.handled != nil {
		d.handled(q, c)
	}
	var in []byte
	for _, b := range c.Readable {
		in = append(in, b...)
	}
	for i, j := 0, len(in)-1; i < j; i, j = i+1, j-1 {
		in[i], in[j] = in[j], in[i]
	}
	var w uint32
	for _, b := range c.Writable {
		k := copy(b, in)
		in = in[k:]
		w += uint32(k)
	}
	return w
}

func reversed(b []byte) []byte {
	r := bytes.Clone(b)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return r
}

const (
	mib      = 1 << 20
	region0  = 0x0
	region1  = 0x1_0000_0000 // above 4G, like QEMU's split of RAM
	queueLen = 2 * mib
)

type harness struct {
	t     *testing.T
	f     *vut.Frontend
	dev   *echoDevice
	serve chan error
}

// newHarness starts a backend for dev on a socketpair and a frontend with
// two 4 MiB regions; it negotiates features unless features is 0.
func newHarness(t *testing.T, dev *echoDevice, cfg Config, features uint64) *harness {
	t.Helper()
	return newHarnessCtx(t, context.Background(), dev, cfg, features)
}

// newHarnessCtx is newHarness with the backend serving under ctx.
func newHarnessCtx(t *testing.T, ctx context.Context, dev *echoDevice, cfg Config, features uint64) *harness {
	t.Helper()
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	f, err := vut.NewFrontend(front, []vut.Region{
		{GPA: region0, Size: 4 * mib, UserAddr: 0x7f00_0000_0000},
		{GPA: region1, Size: 4 * mib, UserAddr: 0x7f00_1000_0000},
	})
	require.NoError(t, err)
	h := &harness{t: t, f: f, dev: dev, serve: make(chan error, 1)}
	b := NewBackend(dev, cfg)
	go func() { h.serve <- b.Serve(ctx, back); back.Close() }()
	t.Cleanup(func() {
		f.Close()
		select {
		case err := <-h.serve:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("backend did not stop after the frontend hung up")
		}
	})
	if features != 0 {
		_, err := f.Negotiate(features, vut.ProtocolReplyAck|vut.ProtocolMQ|vut.ProtocolMemSlots)
		require.NoError(t, err)
		require.NoError(t, f.SetMemTable())
	}
	return h
}

func (h *harness) queue(i uint32, size uint16, gpa uint64) *vut.Queue {
	q, err := h.f.SetupQueue(i, size, gpa, queueLen)
	require.NoError(h.t, err)
	h.t.Cleanup(q.Close)
	return q
}

func bigLimits() Limits { return Limits{MaxReadable: 4 * mib, MaxWritable: 4 * mib} }

func TestBackendEcho(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		indirect bool
		workers  int
	}{
		{"direct", vut.FeatureVersion1, false, 0},
		{"indirect", vut.FeatureVersion1 | vut.FeatureIndirect, true, 0},
		{"event_idx", vut.FeatureVersion1 | vut.FeatureEventIdx, false, 0},
		{"indirect_event_idx_workers", vut.FeatureVersion1 | vut.FeatureIndirect | vut.FeatureEventIdx, true, 4},
		{"legacy_no_protocol_features", vut.FeatureVersion1, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &echoDevice{queues: 3, lim: bigLimits()}
			h := newHarness(t, dev, Config{Workers: tc.workers, InlineQueues: []int{0}}, tc.features)
			queues := []*vut.Queue{h.queue(0, 64, region0), h.queue(1, 256, region1), h.queue(2, 128, region0+queueLen)}
			for qi, q := range queues {
				q.UseIndirect = tc.indirect
				for i := range 50 {
					msg := []byte(fmt.Sprintf("queue %d request %d ", qi, i))
					tail := bytes.Repeat([]byte{byte(i)}, i*37)
					got, err := q.Do([][]byte{msg, tail}, []int{10, len(msg) + len(tail)})
					require.NoError(t, err)
					require.Equal(t, reversed(append(bytes.Clone(msg), tail...)), got)
				}
			}
			require.EqualValues(t, 150, dev.calls.Load())
		})
	}
}

func TestBackendLegacyRingStartsOnKick(t *testing.T) {
	// Without VHOST_USER_F_PROTOCOL_FEATURES there is no SET_VRING_ENABLE:
	// the ring must start when its kick fd arrives.
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	f, err := vut.NewFrontend(front, []vut.Region{{GPA: 0, Size: 4 * mib, UserAddr: 0x1000_0000}})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- NewBackend(dev, Config{}).Serve(context.Background(), back) }()
	require.NoError(t, f.Send(vut.SetOwner, 0, nil))
	require.NoError(t, f.Send(vut.SetFeatures, 0, vut.U64(vut.FeatureVersion1)))
	require.NoError(t, f.SetMemTable())
	q, err := f.SetupQueue(0, 16, 0, queueLen)
	require.NoError(t, err)
	got, err := q.Do([][]byte{[]byte("abc")}, []int{3})
	require.NoError(t, err)
	require.Equal(t, "cba", string(got))
	q.Close()
	f.Close()
	require.NoError(t, <-done)
}

func TestBackendConcurrentRequests(t *testing.T) {
	const workers = 4
	dev := &echoDevice{queues: 2, lim: bigLimits(), hold: make(chan struct{})}
	h := newHarness(t, dev, Config{Workers: workers, InlineQueues: []int{0}}, vut.FeatureVersion1|vut.FeatureEventIdx)
	q := h.queue(1, 128, region0)
	var ps []*vut.Pending
	for i := range 32 {
		p, err := q.Submit([][]byte{[]byte(fmt.Sprint(i))}, []int{8})
		require.NoError(t, err)
		ps = append(ps, p)
	}
	require.Eventually(t, func() bool { return dev.active.Load() == workers }, 10*time.Second, time.Millisecond,
		"requests are not served in parallel by the pool")
	close(dev.hold)
	got, err := q.Wait(10*time.Second, ps...)
	require.NoError(t, err)
	require.Len(t, got, 32)
	require.EqualValues(t, workers, dev.peak.Load(), "more requests ran at once than --thread-pool-size allows")
}

func TestBackendHiprioNotBlockedByRequests(t *testing.T) {
	// With all workers stuck, the inline queue 0 is still served.
	dev := &echoDevice{queues: 2, lim: bigLimits()}
	block := make(chan struct{})
	dev.handled = func(q int, c *Chain) {
		if q == 1 {
			<-block
		}
	}
	h := newHarness(t, dev, Config{Workers: 1, InlineQueues: []int{0}}, vut.FeatureVersion1)
	hi, req := h.queue(0, 16, region0), h.queue(1, 16, region1)
	p, err := req.Submit([][]byte{[]byte("slow")}, []int{4})
	require.NoError(t, err)
	got, err := hi.Do([][]byte{[]byte("forget")}, []int{6})
	require.NoError(t, err)
	require.Equal(t, "tegrof", string(got))
	close(block)
	_, err = req.Wait(10*time.Second, p)
	require.NoError(t, err)
}

func TestBackendEventIdx(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1|vut.FeatureEventIdx)
	q := h.queue(0, 16, region0)
	_, err := q.Do([][]byte{[]byte("x")}, []int{1})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return q.AvailEvent() == 1 }, 5*time.Second, time.Millisecond,
		"backend did not ask for the next kick through avail_event")
	// used_event was 0, so that completion signals. Do may or may not have
	// consumed the signal (it returns once the used ring moves, possibly
	// before the backend writes the call eventfd): drain until the eventfd
	// stays quiet, so a late signal is not mistaken for one below.
	for q.WaitCall(200 * time.Millisecond) {
	}

	// used_event = 2: the guest wants an interrupt only once used->idx
	// passes 2, i.e. after the third completion.
	q.SetUsedEvent(2)
	p1, err := q.Submit([][]byte{[]byte("a")}, []int{1})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return q.UsedIdx() == 2 }, 5*time.Second, time.Millisecond)
	require.False(t, q.WaitCall(50*time.Millisecond), "signalled although used_event was not reached")
	p2, err := q.Submit([][]byte{[]byte("b")}, []int{1})
	require.NoError(t, err)
	require.True(t, q.WaitCall(5*time.Second), "no signal when used->idx passed used_event")
	_, err = q.Wait(time.Second, p1, p2)
	require.NoError(t, err)
}

func TestBackendNoInterruptFlag(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	q := h.queue(0, 16, region0)
	// VRING_AVAIL_F_NO_INTERRUPT lives in avail->flags; Publish rewrites the
	// flags/idx word, so set it through the ring after publishing.
	p, err := q.Submit([][]byte{[]byte("a")}, []int{1})
	require.NoError(t, err)
	require.True(t, q.WaitCall(5*time.Second))
	_, err = q.Wait(time.Second, p)
	require.NoError(t, err)
}

// rawChain writes descs into the descriptor table, publishes head and
// returns the used element.
func rawChain(t *testing.T, q *vut.Queue, head uint16, descs map[uint16]vut.Desc) vut.Used {
	t.Helper()
	for i, d := range descs {
		q.PutDesc(q.DescGPA, i, d)
	}
	before := q.UsedIdx()
	q.Publish(head)
	require.Eventually(t, func() bool { return q.UsedIdx() != before }, 5*time.Second, time.Millisecond)
	u := q.Reap()
	require.Len(t, u, 1)
	return u[0]
}

func TestBackendHostileChains(t *testing.T) {
	lim := Limits{MaxReadable: 64 << 10, MaxWritable: 64 << 10}
	dev := &echoDevice{queues: 1, lim: lim}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1|vut.FeatureIndirect)
	q := h.queue(0, 16, region0)
	buf := q.Alloc(4096)
	tbl := q.Alloc(4096)
	outside := uint64(0x8000_0000) // between the two regions
	for _, tc := range []struct {
		name   string
		descs  map[uint16]vut.Desc
		indir  []vut.Desc // written to tbl
		head   uint16
		served bool
	}{
		{"valid", map[uint16]vut.Desc{0: {Addr: buf, Len: 8, Flags: vut.DescNext, Next: 1}, 1: {Addr: buf + 8, Len: 8, Flags: vut.DescWrite}}, nil, 0, true},
		{"self_loop", map[uint16]vut.Desc{0: {Addr: buf, Len: 8, Flags: vut.DescNext, Next: 0}}, nil, 0, false},
		{"two_loop", map[uint16]vut.Desc{2: {Addr: buf, Len: 8, Flags: vut.DescNext, Next: 3}, 3: {Addr: buf, Len: 8, Flags: vut.DescNext, Next: 2}}, nil, 2, false},
		{"next_out_of_table", map[uint16]vut.Desc{0: {Addr: buf, Len: 8, Flags: vut.DescNext, Next: 16}}, nil, 0, false},
		{"buffer_outside_memory", map[uint16]vut.Desc{0: {Addr: outside, Len: 8}}, nil, 0, false},
		{"buffer_past_region_end", map[uint16]vut.Desc{0: {Addr: 4*mib - 4, Len: 8}}, nil, 0, false},
		{"buffer_wraps_address_space", map[uint16]vut.Desc{0: {Addr: ^uint64(0) - 3, Len: 8}}, nil, 0, false},
		{"readable_after_writable", map[uint16]vut.Desc{0: {Addr: buf, Len: 8, Flags: vut.DescWrite | vut.DescNext, Next: 1}, 1: {Addr: buf, Len: 8}}, nil, 0, false},
		{"readable_over_limit", map[uint16]vut.Desc{0: {Addr: region1, Len: 64<<10 + 1}}, nil, 0, false},
		{"writable_over_limit_in_pieces", map[uint16]vut.Desc{0: {Addr: region1, Len: 40 << 10, Flags: vut.DescWrite | vut.DescNext, Next: 1}, 1: {Addr: region1, Len: 40 << 10, Flags: vut.DescWrite}}, nil, 0, false},
		{"indirect_valid", map[uint16]vut.Desc{0: {Addr: tbl, Len: 32, Flags: vut.DescIndirect}}, []vut.Desc{{Addr: buf, Len: 4, Flags: vut.DescNext, Next: 1}, {Addr: buf + 8, Len: 4, Flags: vut.DescWrite}}, 0, true},
		{"indirect_with_next", map[uint16]vut.Desc{0: {Addr: tbl, Len: 32, Flags: vut.DescIndirect | vut.DescNext, Next: 1}}, []vut.Desc{{Addr: buf, Len: 4}, {Addr: buf, Len: 4}}, 0, false},
		{"indirect_odd_length", map[uint16]vut.Desc{0: {Addr: tbl, Len: 24, Flags: vut.DescIndirect}}, []vut.Desc{{Addr: buf, Len: 4}, {Addr: buf, Len: 4}}, 0, false},
		{"indirect_empty", map[uint16]vut.Desc{0: {Addr: tbl, Len: 0, Flags: vut.DescIndirect}}, nil, 0, false},
		{"indirect_nested", map[uint16]vut.Desc{0: {Addr: tbl, Len: 16, Flags: vut.DescIndirect}}, []vut.Desc{{Addr: tbl, Len: 16, Flags: vut.DescIndirect}}, 0, false},
		{"indirect_loop", map[uint16]vut.Desc{0: {Addr: tbl, Len: 32, Flags: vut.DescIndirect}}, []vut.Desc{{Addr: buf, Len: 4, Flags: vut.DescNext, Next: 1}, {Addr: buf, Len: 4, Flags: vut.DescNext, Next: 0}}, 0, false},
		{"indirect_table_outside_memory", map[uint16]vut.Desc{0: {Addr: outside, Len: 32, Flags: vut.DescIndirect}}, nil, 0, false},
		{"indirect_next_out_of_table", map[uint16]vut.Desc{0: {Addr: tbl, Len: 16, Flags: vut.DescIndirect}}, []vut.Desc{{Addr: buf, Len: 4, Flags: vut.DescNext, Next: 1}}, 0, false},
		{"valid_after_all_that", map[uint16]vut.Desc{5: {Addr: buf, Len: 3, Flags: vut.DescNext, Next: 6}, 6: {Addr: buf + 64, Len: 3, Flags: vut.DescWrite}}, nil, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, d := range tc.indir {
				q.PutDesc(tbl, uint16(i), d)
			}
			copy(h.f.Guest(buf, 8), "abcdefgh")
			before := dev.calls.Load()
			u := rawChain(t, q, tc.head, tc.descs)
			require.Equal(t, tc.head, u.ID)
			if tc.served {
				require.Equal(t, before+1, dev.calls.Load())
				require.NotZero(t, u.Len)
			} else {
				require.Equal(t, before, dev.calls.Load(), "a bad chain reached the device")
				require.Zero(t, u.Len)
			}
		})
	}
}

func TestBackendHeadOutOfRangeStopsQueue(t *testing.T) {
	dev := &echoDevice{queues: 2, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	q := h.queue(0, 16, region0)
	other := h.queue(1, 16, region1)
	q.Publish(16)
	time.Sleep(20 * time.Millisecond)
	require.EqualValues(t, 0, q.UsedIdx())
	// The other queue and the connection live on.
	got, err := other.Do([][]byte{[]byte("ok")}, []int{2})
	require.NoError(t, err)
	require.Equal(t, "ko", string(got))
}

func TestBackendRejectsBadMessages(t *testing.T) {
	dev := &echoDevice{queues: 2, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	f := h.f
	addr := func(index uint32, desc, used, avail uint64) []byte {
		b := State(index, 0)
		for _, v := range []uint64{desc, used, avail, 0} {
			b = append(b, vut.U64(v)...)
		}
		return b
	}
	small, err := os.CreateTemp(t.TempDir(), "small")
	require.NoError(t, err)
	require.NoError(t, small.Truncate(4096))
	t.Cleanup(func() { small.Close() })

	for _, tc := range []struct {
		name    string
		req     uint32
		payload []byte
		fds     []int
		want    string
	}{
		{"vring_num_not_power_of_two", vut.SetVringNum, State(0, 100), nil, "power of 2"},
		{"vring_num_too_big", vut.SetVringNum, State(0, 65536), nil, "power of 2"},
		{"queue_index_out_of_range", vut.SetVringNum, State(7, 16), nil, "queue 7"},
		{"features_never_offered", vut.SetFeatures, vut.U64(1 << 63), nil, "never offered"},
		{"short_payload", vut.SetVringBase, []byte{1, 2, 3}, nil, "payload 3 bytes"},
		{"mem_table_fd_count", vut.SetMemTable, vut.MemTablePayload(f.Regions), []int{f.MemFD}, "2 regions but 1 fds"},
		{"mem_region_beyond_file", vut.SetMemTable, vut.MemTablePayload([]vut.Region{{GPA: 0, Size: 1 << 20, UserAddr: 0}}), []int{int(small.Fd())}, "file has 4096"},
		{"mem_regions_overlap", vut.SetMemTable, vut.MemTablePayload([]vut.Region{{GPA: 0, Size: 8192}, {GPA: 4096, Size: 4096, Offset: 4096}}), []int{f.MemFD, f.MemFD}, "overlap"},
		{"mem_table_zero_regions", vut.SetMemTable, vut.MemTablePayload(nil), nil, "0 regions"},
		{"rings_outside_memory", vut.SetVringAddr, addr(1, 0x1000, 0x2000, 0x3000), nil, ""},
		{"misaligned_used_ring", vut.SetVringAddr, addr(1, 0x7f00_0000_0000, 0x7f00_0000_2002, 0x7f00_0000_1000), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Do(tc.req, tc.payload, tc.fds...)
			if tc.req == vut.SetVringAddr && err == nil {
				// Addresses are checked when the ring can start.
				require.NoError(t, f.Do(vut.SetVringNum, State(1, 16)))
				require.NoError(t, f.Do(vut.SetVringEnable, State(1, 1)))
				kick, call := eventfd(t), eventfd(t)
				require.NoError(t, f.Do(vut.SetVringCall, vut.U64(1), call))
				err = f.Do(vut.SetVringKick, vut.U64(1), kick)
				require.Error(t, err, "a ring outside guest memory was started")
				return
			}
			require.Error(t, err)
			_ = tc.want // the backend logs the reason; the frontend only sees a nack
		})
	}
	// The connection still works.
	q := h.queue(0, 16, region0)
	got, err := q.Do([][]byte{[]byte("12")}, []int{2})
	require.NoError(t, err)
	require.Equal(t, "21", string(got))
}

func State(i, n uint32) []byte { return vut.State(i, n) }

func eventfd(t *testing.T) int {
	fd, err := unixEventfd()
	require.NoError(t, err)
	t.Cleanup(func() { closeFD(fd) })
	return fd
}

func TestBackendVringBaseRestart(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	h := newHarness(t, dev, Config{Workers: 2}, vut.FeatureVersion1|vut.FeatureEventIdx)
	q := h.queue(0, 16, region0)
	for i := range 5 {
		_, err := q.Do([][]byte{[]byte{byte(i)}}, []int{1})
		require.NoError(t, err)
	}
	p, err := h.f.Call(vut.GetVringBase, State(0, 0))
	require.NoError(t, err)
	require.Equal(t, State(0, 5), p, "GET_VRING_BASE must return the next available index")
	// Stopped: a request published now is not served...
	pend, err := q.Submit([][]byte{[]byte("z")}, []int{1})
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.EqualValues(t, 5, q.UsedIdx())
	// ...until the frontend restarts the ring from the base.
	require.NoError(t, h.f.Do(vut.SetVringBase, State(0, 5)))
	require.NoError(t, h.f.Do(vut.SetVringCall, vut.U64(0), q.Call))
	require.NoError(t, h.f.Do(vut.SetVringKick, vut.U64(0), q.Kick))
	require.NoError(t, h.f.Do(vut.SetVringEnable, State(0, 1)))
	q.KickNow()
	_, err = q.Wait(5*time.Second, pend)
	require.NoError(t, err)
}

func TestBackendMemorySlots(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	h := newHarness(t, dev, Config{}, vut.FeatureVersion1)
	f := h.f
	p, err := f.Call(vut.GetMaxMemSlots, nil)
	require.NoError(t, err)
	require.Equal(t, vut.U64(maxMemSlots), p)

	memReg := func(r vut.Region) []byte { return append(make([]byte, 8), vut.MemTablePayload([]vut.Region{r})[8:]...) }
	// Drop region 1 and add it back at a new guest address.
	require.NoError(t, f.Do(vut.RemMemReg, memReg(f.Regions[1]), f.MemFD))
	require.Error(t, f.Do(vut.RemMemReg, memReg(f.Regions[1]), f.MemFD), "removed twice")
	moved := f.Regions[1]
	moved.GPA = 0x2_0000_0000
	require.NoError(t, f.Do(vut.AddMemReg, memReg(moved), f.MemFD))
	require.Error(t, f.Do(vut.AddMemReg, memReg(f.Regions[0]), f.MemFD), "overlapping region accepted")
	f.Regions[1] = moved
	q := h.queue(0, 16, moved.GPA)
	got, err := q.Do([][]byte{[]byte("moved")}, []int{5})
	require.NoError(t, err)
	require.Equal(t, "devom", string(got))
}

func TestBackendShutdownReleasesMemory(t *testing.T) {
	dev := &echoDevice{queues: 2, lim: bigLimits()}
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	f, err := vut.NewFrontend(front, []vut.Region{{GPA: 0, Size: 4 * mib, UserAddr: 0x1000_0000}})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- NewBackend(dev, Config{Workers: 2}).Serve(context.Background(), back) }()
	_, err = f.Negotiate(vut.FeatureVersion1, vut.ProtocolReplyAck)
	require.NoError(t, err)
	require.NoError(t, f.SetMemTable())
	q, err := f.SetupQueue(1, 16, 0, queueLen)
	require.NoError(t, err)
	_, err = q.Do([][]byte{[]byte("x")}, []int{1})
	require.NoError(t, err)
	require.Equal(t, 2, countMappings(t, "guest-ram"), "frontend and backend should both map the memfd")
	f.Conn.Close()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("backend still serving after the frontend went away")
	}
	require.Equal(t, 1, countMappings(t, "guest-ram"), "backend kept guest memory mapped")
	q.Close()
	f.Close()
}

func TestBackendContextCancel(t *testing.T) {
	dev := &echoDevice{queues: 1, lim: bigLimits()}
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	defer front.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewBackend(dev, Config{}).Serve(ctx, back) }()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve ignored its context")
	}
}

func countMappings(t *testing.T, name string) int {
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	n := 0
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "memfd:"+name) {
			n++
		}
	}
	return n
}

var _ sync.Locker = (*sync.Mutex)(nil)
