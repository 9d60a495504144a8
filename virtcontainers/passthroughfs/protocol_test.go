package passthroughfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// These tests drive the FS through go-fuse's ProtocolServer with raw FUSE
// messages split over several buffers, as a virtio-fs transport hands them
// over from guest memory.

type wire struct {
	t      *testing.T
	ps     *fuse.ProtocolServer
	unique uint64
}

// request serializes s (a go-fuse *In struct that starts with InHeader)
// followed by tail, and sets the header.
func request[T any](w *wire, op uint32, nodeid uint64, s *T, tail []byte) []byte {
	w.unique++
	h := (*fuse.InHeader)(unsafe.Pointer(s))
	h.Opcode, h.NodeId, h.Unique = op, nodeid, w.unique
	b := append(bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(s)), unsafe.Sizeof(*s))), tail...)
	h = (*fuse.InHeader)(unsafe.Pointer(&b[0]))
	h.Length = uint32(len(b))
	return b
}

// split cuts b into pieces at the given offsets.
func split(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, a := range at {
		out = append(out, b[prev:a])
		prev = a
	}
	return append(out, b[prev:])
}

// call sends in and returns the reply status and body (after OutHeader).
func (w *wire) call(in [][]byte, outSizes ...int) (int32, []byte) {
	w.t.Helper()
	var out [][]byte
	total := 0
	for _, n := range outSizes {
		out = append(out, make([]byte, n))
		total += n
	}
	n, st := w.ps.HandleRequest(in, out)
	require.Equal(w.t, fuse.OK, st, "transport-level status")
	flat := make([]byte, 0, total)
	for _, o := range out {
		flat = append(flat, o...)
	}
	flat = flat[:n]
	if n == 0 {
		return 0, nil
	}
	oh := (*fuse.OutHeader)(unsafe.Pointer(&flat[0]))
	require.EqualValues(w.t, n, oh.Length, "reply length")
	return oh.Status, flat[unsafe.Sizeof(fuse.OutHeader{}):]
}

func TestProtocolServerRoundTrip(t *testing.T) {
	share := newHostShare(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), nil, 0o644))
	fs := newFS(t, share.src, Options{AnnounceSubmounts: true})
	defer fs.Close()
	w := &wire{t: t, ps: fuse.NewProtocolServer(fs, fs.MountOptions())}

	init := fuse.InitIn{Major: 7, Minor: 38, MaxReadAhead: 128 << 10}
	init.Flags = uint32(fuse.CAP_ASYNC_READ | fuse.CAP_READDIRPLUS | fuse.CAP_SUBMOUNTS | fuse.CAP_PARALLEL_DIROPS)
	st, body := w.call([][]byte{request(w, 26, 0, &init, nil)}, 4096)
	require.Zero(t, st)
	io := (*fuse.InitOut)(unsafe.Pointer(&body[0]))
	require.EqualValues(t, 1<<20, io.MaxWrite)
	require.NotZero(t, io.Flags&fuse.CAP_SUBMOUNTS, "submounts echoed")

	st, body = w.call([][]byte{request(w, 1, rootID, &fuse.InHeader{}, []byte("f\x00"))}, 16, 4096)
	require.Zero(t, st)
	node := (*fuse.EntryOut)(unsafe.Pointer(&body[0])).NodeId

	open := fuse.OpenIn{Flags: unix.O_RDWR}
	st, body = w.call([][]byte{request(w, 14, node, &open, nil)}, 4096)
	require.Zero(t, st)
	fh := (*fuse.OpenOut)(unsafe.Pointer(&body[0])).Fh

	// WRITE with the data spread over three guest buffers.
	win := fuse.WriteIn{Fh: fh, Offset: 0, Size: uint32(len(want))}
	msg := request(w, 16, node, &win, want)
	hdrLen := len(msg) - len(want)
	st, body = w.call(split(msg, hdrLen, hdrLen+1000, hdrLen+70000), 4096)
	require.Zero(t, st)
	require.EqualValues(t, len(want), (*fuse.WriteOut)(unsafe.Pointer(&body[0])).Size)
	got, err := os.ReadFile(filepath.Join(share.src, "f"))
	require.NoError(t, err)
	require.Equal(t, want, got)

	// READ into a reply split after the header and inside the payload,
	// from an unaligned offset, past the end of the file.
	rin := fuse.ReadIn{Fh: fh, Offset: 100, Size: uint32(len(want))}
	st, body = w.call([][]byte{request(w, 15, node, &rin, nil)}, 16, 3000, len(want))
	require.Zero(t, st)
	require.Equal(t, want[100:], body)

	// Unknown node IDs and file handles.
	rin.Fh = fh + 100
	st, _ = w.call([][]byte{request(w, 15, node, &rin, nil)}, 16, len(want))
	require.EqualValues(t, -int32(unix.EBADF), st)
	st, _ = w.call([][]byte{request(w, 3, 4242, &fuse.GetAttrIn{}, nil)}, 4096)
	require.EqualValues(t, -int32(unix.EBADF), st)

	// BATCH_FORGET drops the lookup; the node is gone afterwards.
	type forgetOne struct{ NodeId, Nlookup uint64 }
	type batchForgetIn struct {
		fuse.InHeader
		Count, Dummy uint32
	}
	entries := []forgetOne{{node, 1}, {99999, 5}}
	tail := unsafe.Slice((*byte)(unsafe.Pointer(&entries[0])), len(entries)*16)
	n, _ := w.ps.HandleRequest([][]byte{request(w, 42, 0, &batchForgetIn{Count: 2}, tail)}, nil)
	require.Zero(t, n, "no reply to BATCH_FORGET")
	require.Nil(t, fs.inodes.get(node))

	// go-fuse has no SYNCFS handler: the transport calls FS.SyncFs.
	st, _ = w.call([][]byte{request(w, 50, rootID, &fuse.InHeader{}, nil)}, 4096)
	require.EqualValues(t, -int32(unix.ENOSYS), st)
	require.Equal(t, fuse.OK, fs.SyncFs(rootID))
}
