package fsserver

import (
	"context"
	"encoding/binary"
	"io"
	stdlog "log"
	"sync"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
)

// forgetSpy records the forgets that reach the file system.
type forgetSpy struct {
	fuse.RawFileSystem
	mu      sync.Mutex
	forgets [][2]uint64
	n       int
	keep    bool
}

func (s *forgetSpy) Forget(node, nlookup uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if s.keep {
		s.forgets = append(s.forgets, [2]uint64{node, nlookup})
	}
}

// initedDevice is a device over fs after a successful INIT.
func initedDevice(t testing.TB, fs fuse.RawFileSystem) *Device {
	t.Helper()
	opts := &fuse.MountOptions{MaxWrite: 1 << 20, Logger: stdlog.New(io.Discard, "", 0)}
	dev := NewDevice(context.Background(), fs, opts, DeviceConfig{})
	out := make([]byte, 16+unsafe.Sizeof(fuse.InitOut{}))
	n := dev.Handle(context.Background(), 1, &vhostuser.Chain{
		Readable: [][]byte{request(fst.OpInit, 0, fst.InBody(&fuse.InitIn{Major: 7, Minor: 36}))},
		Writable: [][]byte{out},
	})
	require.GreaterOrEqual(t, n, uint32(16))
	require.Zero(t, binary.LittleEndian.Uint32(out[4:]), "INIT failed")
	return dev
}

func request(op uint32, node uint64, body []byte) []byte {
	h := fuse.InHeader{Opcode: op, Unique: 9, NodeId: node, Length: uint32(40 + len(body))}
	return append(fst.StructBytes(&h), body...)
}

// batch is a BATCH_FORGET body saying count entries, followed by entries.
func batch(count uint32, entries ...[2]uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, count)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e[0])
		b = binary.LittleEndian.AppendUint64(b, e[1])
	}
	return b
}

func forgetBody(nlookup uint64) []byte { return binary.LittleEndian.AppendUint64(nil, nlookup) }

// cuts splits b into buffers at the offsets given, as a guest's descriptors
// may.
func cuts(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, a := range at {
		out = append(out, b[prev:a])
		prev = a
	}
	return append(out, b[prev:])
}

func TestDeviceForgetsReachTheFileSystem(t *testing.T) {
	three := request(fst.OpBatchForget, 0, batch(3, [2]uint64{5, 1}, [2]uint64{^uint64(0), 1}, [2]uint64{6, 2}))
	for _, tc := range []struct {
		name string
		in   [][]byte
		want [][2]uint64
	}{
		{"FORGET", [][]byte{request(fst.OpForget, 7, forgetBody(3))}, [][2]uint64{{7, 3}}},
		{"FORGET with its count in a second buffer", cuts(request(fst.OpForget, 7, forgetBody(3)), 40, 44), [][2]uint64{{7, 3}}},
		{"FORGET without its count is not acted on", [][]byte{request(fst.OpForget, 7, nil)}, nil},
		{"FORGET of go-fuse's own poll node is not passed on", [][]byte{request(fst.OpForget, ^uint64(0), forgetBody(1))}, nil},
		{"BATCH_FORGET skips go-fuse's poll node", [][]byte{three}, [][2]uint64{{5, 1}, {6, 2}}},
		{"BATCH_FORGET cut inside its entries", cuts(three, 3, 45, 50, 70, 71), [][2]uint64{{5, 1}, {6, 2}}},
		{"BATCH_FORGET with an empty buffer", cuts(three, 48, 48), [][2]uint64{{5, 1}, {6, 2}}},
		{"BATCH_FORGET of 0 entries", [][]byte{request(fst.OpBatchForget, 0, batch(0))}, nil},
		{"BATCH_FORGET counting more entries than it holds forgets those it holds", [][]byte{request(fst.OpBatchForget, 0, batch(4, [2]uint64{5, 1}, [2]uint64{6, 2}))}, [][2]uint64{{5, 1}, {6, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spy := &forgetSpy{RawFileSystem: fuse.NewDefaultRawFileSystem(), keep: true}
			dev := initedDevice(t, spy)
			n := dev.Handle(context.Background(), HiprioQueue, &vhostuser.Chain{Readable: tc.in})
			require.Zero(t, n, "forgets have no reply")
			require.Equal(t, tc.want, spy.forgets)
		})
	}
}

// Forgets are half of what a guest churning through files sends: serving
// them must not allocate (go-fuse's request record is about 1 KiB).
func TestDeviceForgetsDoNotAllocate(t *testing.T) {
	spy := &forgetSpy{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	dev := initedDevice(t, spy)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		c    *vhostuser.Chain
	}{
		{"FORGET", &vhostuser.Chain{Readable: [][]byte{request(fst.OpForget, 7, forgetBody(1))}}},
		{"BATCH_FORGET", &vhostuser.Chain{Readable: cuts(request(fst.OpBatchForget, 0, batch(2, [2]uint64{5, 1}, [2]uint64{6, 1})), 50)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(100, func() { dev.Handle(ctx, HiprioQueue, tc.c) })
			require.Zero(t, allocs)
		})
	}
	require.Positive(t, spy.n)
}
