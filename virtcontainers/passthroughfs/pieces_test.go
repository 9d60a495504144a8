package passthroughfs

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// These tests hold Options.MaxIOPerCall: a READ or WRITE served in system
// calls of at most that many bytes, byte for byte what one call would do.

const piece = 64 << 10

// pattern is n bytes that differ from their neighbours at every offset a
// piece could start, so that a misplaced or repeated piece shows.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + seed)
	}
	return b
}

// segments cuts b into segments of the given sizes (the last takes the rest).
func segments(b []byte, sizes []int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, b[:n:n])
		b = b[n:]
	}
	return out
}

func total(sizes []int) int {
	n := 0
	for _, s := range sizes {
		n += s
	}
	return n
}

// calls is how many calls of at most limit bytes and iovMax segments a
// scatter list of sizes takes.
func calls(sizes []int, limit int) int {
	if limit == 0 {
		segs := 0
		for _, s := range sizes {
			if s > 0 {
				segs++
			}
		}
		return (segs + iovMax - 1) / iovMax
	}
	return (total(sizes) + limit - 1) / limit
}

func TestIovCursorCutsWithoutCopying(t *testing.T) {
	many := make([]int, 40)
	for i := range many {
		many[i] = 100
	}
	for _, tc := range []struct {
		name  string
		sizes []int
		limit int
		calls int
	}{
		{"one byte less than a piece: one call", []int{piece - 1}, piece, 1},
		{"exactly a piece: one call", []int{piece}, piece, 1},
		{"one byte more: a second call of one byte", []int{piece + 1}, piece, 2},
		{"1 MiB in one segment: 16 pieces", []int{1 << 20}, piece, 16},
		{"segments crossing every piece boundary", []int{piece / 3, piece, piece + 7, 5, 2*piece - 12}, piece, 5},
		{"a segment ending on a boundary, then a one-byte one", []int{piece / 2, piece / 2, 1}, piece, 2},
		{"empty segments are skipped", []int{0, piece, 0, 0, 1, 0}, piece, 2},
		{"more segments than iovMax: cut there too", many, piece, 2},
		{"no limit: one call", []int{1 << 20, 5}, 0, 1},
		{"no limit, more segments than iovMax: cut at iovMax", many, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := pattern(total(tc.sizes), 1)
			bufs := segments(want, tc.sizes)
			var got []byte
			c := iovCursor{bufs: bufs}
			n := 0
			for {
				var vecs [iovMax]unix.Iovec
				cnt, size := c.fill(&vecs, tc.limit)
				if cnt == 0 {
					break
				}
				n++
				if tc.limit > 0 {
					require.LessOrEqual(t, size, tc.limit, "call %d", n)
				}
				sum := 0
				for _, v := range vecs[:cnt] {
					seg := unsafe.Slice(v.Base, v.Len)
					require.True(t, within(want, seg), "call %d points into the caller's buffers, not a copy", n)
					got = append(got, seg...)
					sum += len(seg)
				}
				require.Equal(t, size, sum)
				c.advance(size)
			}
			require.Equal(t, tc.calls, n, "calls")
			require.True(t, bytes.Equal(want, got), "the calls' bytes, in order, are the request's")
		})
	}
}

func within(all, part []byte) bool {
	a, p := uintptr(unsafe.Pointer(&all[0])), uintptr(unsafe.Pointer(&part[0]))
	return p >= a && p+uintptr(len(part)) <= a+uintptr(len(all))
}

func TestIovCursorDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 1<<20)
	bufs := [][]byte{buf[:100<<10], buf[100<<10 : 700<<10], buf[700<<10:]}
	allocs := testing.AllocsPerRun(100, func() {
		c := iovCursor{bufs: bufs}
		for {
			var vecs [iovMax]unix.Iovec
			cnt, size := c.fill(&vecs, piece)
			if cnt == 0 {
				break
			}
			c.advance(size / 2) // a short call in the middle of a segment
			c.advance(size - size/2)
		}
	})
	require.Zero(t, allocs)
}

// callCounter counts the read and write system calls of this goroutine's
// thread (/proc/thread-self/io: syscr, syscw; preadv and pwritev2 count as
// one each), the goroutine locked to it for the test.
type callCounter struct {
	f             *os.File
	reads, writes int // what reading the counters itself adds
}

func newCallCounter(t *testing.T) *callCounter {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	f, err := os.Open("/proc/thread-self/io")
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	c := &callCounter{f: f}
	c.reads, c.writes = c.count(t, func() {})
	return c
}

func (c *callCounter) read(t *testing.T) (r, w int) {
	var buf [512]byte
	n, err := c.f.ReadAt(buf[:], 0)
	if n == 0 {
		require.NoError(t, err)
	}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "syscr":
			r, _ = strconv.Atoi(v)
		case "syscw":
			w, _ = strconv.Atoi(v)
		}
	}
	return r, w
}

// count returns the read and write calls f makes.
func (c *callCounter) count(t *testing.T, f func()) (reads, writes int) {
	r0, w0 := c.read(t)
	f()
	r1, w1 := c.read(t)
	return r1 - r0 - c.reads, w1 - w0 - c.writes
}

// openFile looks name up in fs's root and opens it with flags.
func openFile(t *testing.T, fs *FS, name string, flags uint32) (nodeid, fh uint64) {
	t.Helper()
	e := mustLookup(t, fs, rootID, name)
	var oo fuse.OpenOut
	require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: flags}, &oo))
	t.Cleanup(func() { fs.Release(nil, &fuse.ReleaseIn{InHeader: hdr(e.NodeId), Fh: oo.Fh}) })
	return e.NodeId, oo.Fh
}

// readv serves READ as a virtio-fs session does: into the reply's segments.
func readv(fs *FS, nodeid, fh uint64, off int64, dst [][]byte) (int, fuse.Status) {
	r, st := fs.Read(nil, &fuse.ReadIn{InHeader: hdr(nodeid), Fh: fh, Offset: uint64(off), Size: uint32(total(lens(dst)))}, nil)
	if st != fuse.OK {
		return 0, st
	}
	defer r.Done()
	return r.(interface {
		Readv([][]byte) (int, fuse.Status)
	}).Readv(dst)
}

func lens(bufs [][]byte) []int {
	var out []int
	for _, b := range bufs {
		out = append(out, len(b))
	}
	return out
}

func TestReadAndWriteInPieces(t *testing.T) {
	const fileSize = 4 << 20
	for _, tc := range []struct {
		name  string
		limit int
		sizes []int
		off   int64
	}{
		{"a piece less one byte", piece, []int{piece - 1}, 0},
		{"exactly a piece", piece, []int{piece}, 0},
		{"a piece and one byte", piece, []int{piece + 1}, 0},
		{"1 MiB, as Linux sends it, at an odd offset", piece, []int{1 << 20}, 4097},
		{"several segments crossing the boundaries", piece, []int{piece / 3, piece, piece + 7, 5, 2*piece - 12}, 12345},
		{"a guest's 4 KiB pages", piece, []int{100, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 4000}, 0},
		{"128 KiB pieces", 128 << 10, []int{1 << 20}, 0},
		{"no limit: one call", 0, []int{1 << 20}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			path := filepath.Join(share.src, "f")
			old := pattern(fileSize, 3)
			require.NoError(t, os.WriteFile(path, old, 0o644))
			fs := newFS(t, share.src, Options{MaxIOPerCall: tc.limit})
			t.Cleanup(func() { fs.Close() })
			nodeid, fh := openFile(t, fs, "f", unix.O_RDWR)
			cc := newCallCounter(t)
			n := total(tc.sizes)

			dst := segments(make([]byte, n), tc.sizes)
			var got int
			var st fuse.Status
			reads, _ := cc.count(t, func() { got, st = readv(fs, nodeid, fh, tc.off, dst) })
			require.Equal(t, fuse.OK, st)
			require.Equal(t, n, got)
			require.Equal(t, calls(tc.sizes, tc.limit), reads, "preadv calls")
			require.True(t, bytes.Equal(old[tc.off:tc.off+int64(n)], bytes.Join(dst, nil)), "read the file's bytes")

			data := pattern(n, 5)
			var wrote uint32
			_, writes := cc.count(t, func() {
				wrote, st = fs.Writev(nil, &fuse.WriteIn{InHeader: hdr(nodeid), Fh: fh, Offset: uint64(tc.off), Size: uint32(n)}, segments(data, tc.sizes))
			})
			require.Equal(t, fuse.OK, st)
			require.Equal(t, n, int(wrote))
			require.Equal(t, calls(tc.sizes, tc.limit), writes, "pwritev2 calls")
			want := append(append(append([]byte(nil), old[:tc.off]...), data...), old[tc.off+int64(n):]...)
			onDisk, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, bytes.Equal(want, onDisk), "the file holds the written bytes, the rest untouched")
		})
	}
}

// fullVolume mounts a tmpfs of size bytes at the share's "vol".
func fullVolume(t *testing.T, share hostShare, size int) {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := filepath.Join(share.src, "vol")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// faulting is n bytes of memory whose last bad bytes cannot be touched
// (PROT_NONE): the kernel answers EFAULT for them.
func faulting(t *testing.T, n, bad int) []byte {
	t.Helper()
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(m) })
	if bad > 0 {
		require.NoError(t, unix.Mprotect(m[n-bad:], unix.PROT_NONE))
	}
	return m
}

func TestWhatEndsARequestServedInPieces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		write  bool
		volume int // a tmpfs of this size holds the file, if set
		file   int // the file's size before the request
		size   int // the request's
		bad    int // the request's last bytes are memory the kernel cannot touch
		want   int
		status fuse.Status
		calls  int
	}{
		{name: "EOF inside a piece: a short read ends it", file: 100 << 10, size: 4 * piece, want: 100 << 10, calls: 2},
		{name: "EOF on a piece boundary: the empty read ends it", file: 2 * piece, size: 4 * piece, want: 2 * piece, calls: 3},
		{name: "reading at EOF: nothing", file: 0, size: 4 * piece, want: 0, calls: 1},
		{name: "a read error after some pieces returns their bytes", file: 1 << 20, size: 3 * piece, bad: piece, want: 2 * piece, calls: 3},
		{name: "a read error in the first piece is the request's", file: 1 << 20, size: piece, bad: piece, status: fuse.Status(unix.EFAULT), calls: 1},
		{name: "a short write ends it", write: true, volume: 100 << 10, size: 4 * piece, want: 100 << 10, calls: 2},
		{name: "a write error after some pieces returns their bytes", write: true, volume: 2 * piece, size: 4 * piece, want: 2 * piece, calls: 3},
		{name: "a write error in the first piece is the request's", write: true, volume: 1 << 20, size: 2 * piece, bad: 2 * piece, status: fuse.Status(unix.EFAULT), calls: 1},
		{name: "memory faulting in a later piece: the pieces before it are written", write: true, volume: 1 << 20, size: 3 * piece, bad: piece, want: 2 * piece, calls: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			name := "f"
			if tc.volume > 0 {
				fullVolume(t, share, tc.volume)
				name = "vol/f"
			}
			old := pattern(tc.file, 3)
			require.NoError(t, os.WriteFile(filepath.Join(share.src, name), old, 0o644))
			fs := newFS(t, share.src, Options{MaxIOPerCall: piece})
			t.Cleanup(func() { fs.Close() })
			dir := uint64(rootID)
			if tc.volume > 0 {
				dir = mustLookup(t, fs, rootID, "vol").NodeId
			}
			e := mustLookup(t, fs, dir, "f")
			var oo fuse.OpenOut
			require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDWR}, &oo))
			t.Cleanup(func() { fs.Release(nil, &fuse.ReleaseIn{InHeader: hdr(e.NodeId), Fh: oo.Fh}) })
			buf := faulting(t, tc.size, tc.bad)
			cc := newCallCounter(t)

			var got int
			var st fuse.Status
			if !tc.write {
				n, _ := cc.count(t, func() { got, st = readv(fs, e.NodeId, oo.Fh, 0, [][]byte{buf}) })
				require.Equal(t, tc.calls, n, "preadv calls")
				require.Equal(t, tc.status, st)
				require.Equal(t, tc.want, got)
				require.True(t, bytes.Equal(old[:got], buf[:got]))
				return
			}
			copy(buf[:tc.size-tc.bad], pattern(tc.size-tc.bad, 5))
			_, n := cc.count(t, func() {
				var w uint32
				w, st = fs.Writev(nil, &fuse.WriteIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Size: uint32(tc.size)}, [][]byte{buf})
				got = int(w)
			})
			require.Equal(t, tc.calls, n, "pwritev2 calls")
			require.Equal(t, tc.status, st)
			require.Equal(t, tc.want, got)
			onDisk, err := os.ReadFile(filepath.Join(share.src, name))
			require.NoError(t, err)
			require.True(t, bytes.Equal(buf[:got], onDisk), "the file holds what was written, and only that")
		})
	}
}

func TestAppendingWritesAreNeverCut(t *testing.T) {
	const size = 4 * piece
	head := []byte("head\n")
	for _, tc := range []struct {
		name  string
		flags uint32 // the guest's open flags
		write uint32 // the WRITE's flags
		off   uint64
		want  func(data []byte) []byte
	}{
		{"the guest's write(2) on an O_APPEND file: one RWF_APPEND call, at the end", unix.O_WRONLY | unix.O_APPEND, 0, 0,
			func(data []byte) []byte { return append(append([]byte(nil), head...), data...) }},
		{"a page-cache writeback of an O_APPEND file: one call, at its offset", unix.O_WRONLY | unix.O_APPEND, fuse.WRITE_CACHE, 1,
			func(data []byte) []byte { return append(append([]byte(nil), head[:1]...), data...) }},
		{"the same writeback without O_APPEND is cut", unix.O_WRONLY, fuse.WRITE_CACHE, 1,
			func(data []byte) []byte { return append(append([]byte(nil), head[:1]...), data...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			path := filepath.Join(share.src, "log")
			require.NoError(t, os.WriteFile(path, head, 0o644))
			fs := newFS(t, share.src, Options{MaxIOPerCall: piece})
			t.Cleanup(func() { fs.Close() })
			nodeid, fh := openFile(t, fs, "log", tc.flags)
			cc := newCallCounter(t)
			data := pattern(size, 9)
			var st fuse.Status
			var n uint32
			_, writes := cc.count(t, func() {
				n, st = fs.Writev(nil, &fuse.WriteIn{InHeader: hdr(nodeid), Fh: fh, Offset: tc.off, Size: size, WriteFlags: tc.write},
					[][]byte{data[:100], data[100:]})
			})
			require.Equal(t, fuse.OK, st)
			require.Equal(t, size, int(n))
			wantCalls := 1
			if tc.flags&unix.O_APPEND == 0 {
				wantCalls = size / piece
			}
			require.Equal(t, wantCalls, writes, "pwritev2 calls")
			onDisk, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, bytes.Equal(tc.want(data), onDisk))
		})
	}
	t.Run("RWF_APPEND given to pwriteFull with a limit: one call", func(t *testing.T) {
		f, err := os.OpenFile(filepath.Join(t.TempDir(), "log"), os.O_RDWR|os.O_CREATE, 0o644)
		require.NoError(t, err)
		defer f.Close()
		_, err = f.Write(head)
		require.NoError(t, err)
		cc := newCallCounter(t)
		data := pattern(size, 9)
		var n int
		_, writes := cc.count(t, func() { n, _ = pwriteFull(int(f.Fd()), [][]byte{data}, 0, unix.RWF_APPEND, piece) })
		require.Equal(t, size, n)
		require.Equal(t, 1, writes)
		onDisk, err := os.ReadFile(f.Name())
		require.NoError(t, err)
		require.True(t, bytes.Equal(append(append([]byte(nil), head...), data...), onDisk))
	})
}
