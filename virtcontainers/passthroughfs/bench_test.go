package passthroughfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The benchmarks call the FS as a session would, without a kernel in
// between: they measure the daemon's own cost per request. The daemon
// comparison with virtiofsd runs in a VM (make bench-daemon).

// benchFS serves a fresh host share, in which it first creates the empty
// files named.
func benchFS(b *testing.B, opts Options, files ...string) (*FS, string) {
	share := newHostShare(b)
	for _, name := range files {
		require.NoError(b, os.WriteFile(filepath.Join(share.src, name), nil, 0o644))
	}
	fs := newFS(b, share.src, opts)
	b.Cleanup(func() { fs.Close() })
	return fs, share.src
}

// loopLookupForget measures LOOKUP of name in the root and FORGET of it.
func loopLookupForget(b *testing.B, fs *FS, name string) {
	h := hdr(rootID)
	b.ReportAllocs()
	for b.Loop() {
		var out fuse.EntryOut
		if st := fs.Lookup(nil, &h, name, &out); st != fuse.OK {
			b.Fatal(st)
		}
		fs.Forget(out.NodeId, 1)
	}
}

func BenchmarkLookupForget(b *testing.B) {
	fs, _ := benchFS(b, Options{}, "f")
	loopLookupForget(b, fs, "f")
}

func BenchmarkLookupCached(b *testing.B) {
	fs, _ := benchFS(b, Options{}, "f")
	h := hdr(rootID)
	var first fuse.EntryOut
	fs.Lookup(nil, &h, "f", &first)
	b.ReportAllocs()
	for b.Loop() {
		var out fuse.EntryOut
		if st := fs.Lookup(nil, &h, "f", &out); st != fuse.OK {
			b.Fatal(st)
		}
	}
}

func BenchmarkGetAttr(b *testing.B) {
	fs, _ := benchFS(b, Options{}, "f")
	h := hdr(rootID)
	var e fuse.EntryOut
	fs.Lookup(nil, &h, "f", &e)
	in := fuse.GetAttrIn{InHeader: hdr(e.NodeId)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var out fuse.AttrOut
		for pb.Next() {
			if st := fs.GetAttr(nil, &in, &out); st != fuse.OK {
				b.Fatal(st)
			}
		}
	})
}

func BenchmarkCreateStatUnlink(b *testing.B) {
	fs, _ := benchFS(b, Options{})
	h := hdr(rootID)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("f%d", i)
		i++
		var co fuse.CreateOut
		if st := fs.Create(nil, &fuse.CreateIn{InHeader: h, Flags: unix.O_WRONLY, Mode: 0o644}, name, &co); st != fuse.OK {
			b.Fatal(st)
		}
		fs.Flush(nil, &fuse.FlushIn{InHeader: hdr(co.NodeId), Fh: co.Fh})
		fs.Release(nil, &fuse.ReleaseIn{InHeader: hdr(co.NodeId), Fh: co.Fh})
		var ao fuse.AttrOut
		fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(co.NodeId)}, &ao)
		if st := fs.Unlink(nil, &h, name); st != fuse.OK {
			b.Fatal(st)
		}
		fs.Forget(co.NodeId, 1)
	}
}

func BenchmarkReadDirPlus1k(b *testing.B) {
	fs, src := benchFS(b, Options{})
	for i := 0; i < 1000; i++ {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("entry-%04d", i)), nil, 0o644)
	}
	h := hdr(rootID)
	buf := make([]byte, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		var oo fuse.OpenOut
		fs.OpenDir(nil, &fuse.OpenIn{InHeader: h}, &oo)
		off := uint64(0)
		for {
			l := fuse.NewDirEntryList(buf, off)
			fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: h, Fh: oo.Fh, Offset: off, Size: uint32(len(buf))}, l)
			ents := decodePlus(l.Bytes())
			if len(ents) == 0 {
				break
			}
			for _, e := range ents {
				if e.NodeId != 0 {
					fs.Forget(e.NodeId, 1)
				}
			}
			off = l.Offset
		}
		fs.ReleaseDir(&fuse.ReleaseIn{InHeader: h, Fh: oo.Fh})
	}
}

func benchRW(b *testing.B, size int, write bool) { benchRWOpts(b, size, write, Options{}) }

func benchRWOpts(b *testing.B, size int, write bool, opts Options) {
	fs, src := benchFS(b, opts)
	const fileSize = 64 << 20
	f, _ := os.Create(filepath.Join(src, "data"))
	f.Truncate(fileSize)
	f.Close()
	h := hdr(rootID)
	var e fuse.EntryOut
	fs.Lookup(nil, &h, "data", &e)
	var oo fuse.OpenOut
	fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDWR}, &oo)
	buf := make([]byte, size)
	iov := [][]byte{buf}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	off := uint64(0)
	for b.Loop() {
		if write {
			in := fuse.WriteIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Offset: off, Size: uint32(size)}
			if _, st := fs.Writev(nil, &in, iov); st != fuse.OK {
				b.Fatal(st)
			}
		} else {
			r, st := fs.Read(nil, &fuse.ReadIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Offset: off, Size: uint32(size)}, buf)
			if st != fuse.OK {
				b.Fatal(st)
			}
			r.(interface {
				Readv([][]byte) (int, fuse.Status)
			}).Readv(iov)
			r.Done()
		}
		off = (off + uint64(size)) % fileSize
	}
}

func BenchmarkRead4K(b *testing.B)  { benchRW(b, 4<<10, false) }
func BenchmarkRead1M(b *testing.B)  { benchRW(b, 1<<20, false) }
func BenchmarkWrite1M(b *testing.B) { benchRW(b, 1<<20, true) }

// 1 MiB requests served in calls of at most 64 or 128 KiB (MaxIOPerCall).
func BenchmarkRead1MInPieces(b *testing.B) {
	for _, p := range []int{64 << 10, 128 << 10} {
		b.Run(strconv.Itoa(p>>10)+"KiB", func(b *testing.B) { benchRWOpts(b, 1<<20, false, Options{MaxIOPerCall: p}) })
	}
}

func BenchmarkWrite1MInPieces(b *testing.B) {
	for _, p := range []int{64 << 10, 128 << 10} {
		b.Run(strconv.Itoa(p>>10)+"KiB", func(b *testing.B) { benchRWOpts(b, 1<<20, true, Options{MaxIOPerCall: p}) })
	}
}
