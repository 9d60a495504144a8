package passthroughfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Recovery must cost nothing on the request path: the same requests with it
// off and on.
func BenchmarkRecoverHotPath(b *testing.B) {
	for _, tc := range []struct {
		name string
		rec  *RecoverOptions
	}{{"off", nil}, {"on", &RecoverOptions{}}} {
		b.Run("lookup-forget/"+tc.name, func(b *testing.B) {
			fs, _ := benchFS(b, Options{AnnounceSubmounts: true, Recover: tc.rec}, "f")
			loopLookupForget(b, fs, "f")
		})
		b.Run("getattr/"+tc.name, func(b *testing.B) {
			fs, _ := benchFS(b, Options{AnnounceSubmounts: true, Recover: tc.rec}, "f")
			h := hdr(rootID)
			var e fuse.EntryOut
			fs.Lookup(nil, &h, "f", &e)
			in := fuse.GetAttrIn{InHeader: hdr(e.NodeId)}
			b.ReportAllocs()
			var out fuse.AttrOut
			for b.Loop() {
				if st := fs.GetAttr(nil, &in, &out); st != fuse.OK {
					b.Fatal(st)
				}
			}
		})
	}
}

// BenchmarkRecoverSubmountRoot: what a submount root costs. lookup-forget
// is a fixed kernel's pattern (with recovery on, each FORGET holds the
// identity and the next LOOKUP revives it); recover is one recovery after a
// buggy kernel's FORGET (Reset in the loop starts each over).
func BenchmarkRecoverSubmountRoot(b *testing.B) {
	testutil.RequiresRoot(b)
	share := newHostShare(b)
	vol := filepath.Join(share.src, "vol")
	os.Mkdir(vol, 0o755)
	if err := unix.Mount("tmpfs", vol, "tmpfs", 0, "size=1m"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })
	h := hdr(rootID)
	for _, tc := range []struct {
		name string
		rec  *RecoverOptions
	}{{"off", nil}, {"on", &RecoverOptions{}}, {"on-descriptor", &RecoverOptions{noHandles: true}}} {
		b.Run("lookup-forget/"+tc.name, func(b *testing.B) {
			fs := newFS(b, share.src, Options{AnnounceSubmounts: true, Recover: tc.rec})
			b.Cleanup(func() { fs.Close() })
			loopLookupForget(b, fs, "vol")
		})
		if tc.rec == nil {
			continue
		}
		b.Run("recover/"+tc.name, func(b *testing.B) {
			fs := newFS(b, share.src, Options{AnnounceSubmounts: true, Recover: tc.rec})
			b.Cleanup(func() { fs.Close() })
			b.ReportAllocs()
			for b.Loop() {
				var out fuse.EntryOut
				if st := fs.Lookup(nil, &h, "vol", &out); st != fuse.OK {
					b.Fatal(st)
				}
				fs.Forget(out.NodeId, 1)
				var ao fuse.AttrOut
				if st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(out.NodeId)}, &ao); st != fuse.OK {
					b.Fatal(st)
				}
				fs.Reset()
			}
		})
	}
}

// BenchmarkRecoverHeldEntryMemory reports the heap one held root costs with
// a Kata-like path (<64-hex container id>-<16 hex>-<name>, 100 bytes) and an
// 8-byte file handle, as README states it.
func BenchmarkRecoverHeldEntryMemory(b *testing.B) {
	share := newHostShare(b)
	name := strings.Repeat("c", 64) + "-" + strings.Repeat("f", 16) + "-" + strings.Repeat("v", 18)
	require.NoError(b, os.Mkdir(filepath.Join(share.src, name), 0o755))
	const n = 4096
	for b.Loop() {
		fs := newFS(b, share.src, Options{AnnounceSubmounts: true, Recover: &RecoverOptions{MaxHeld: n}})
		dirFD, err := unix.Open(filepath.Join(share.src, name), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(b, err)
		fh := handleOf(dirFD)
		require.NotNil(b, fh)
		before := liveHeap()
		for i := 0; i < n; i++ {
			// Synthetic keys, one real directory: hold only reads its path.
			ino := &inode{nodeid: uint64(100 + i), key: inodeKey{dev: 1, ino: uint64(i), mnt: 1}, fd: dirFD, mode: unix.S_IFDIR, submount: true}
			ino.setSub(&fileHandle{fh: unix.NewFileHandle(fh.fh.Type(), append([]byte(nil), fh.fh.Bytes()...)), mountID: fh.mountID}, nil)
			ino.pins.Store(2) // never closes dirFD
			ks := fs.inodes.keyShard(ino.key)
			ks.mu.Lock()
			fs.rec.hold(ks, ino)
			ks.mu.Unlock()
		}
		after := liveHeap()
		require.Equal(b, n, fs.RecoveryStats().Held)
		b.ReportMetric(float64(after-before)/n, "B/entry")
		b.ReportMetric(float64(len(name)), "path-bytes")
		fs.Close()
		unix.Close(dirFD)
	}
}
