package passthroughfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
)

// readDirNames lists an open directory with plain READDIR requests of size
// bytes, decoding the replies as the kernel does.
func readDirNames(t *testing.T, fs *FS, nodeid, fh uint64, size int) []string {
	t.Helper()
	var names []string
	off := uint64(0)
	for {
		l := fuse.NewDirEntryList(make([]byte, size), off)
		in := fuse.ReadIn{InHeader: hdr(nodeid), Fh: fh, Offset: off, Size: uint32(size)}
		require.Equal(t, fuse.OK, fs.ReadDir(nil, &in, l))
		b := l.Bytes()
		if len(b) == 0 {
			return names
		}
		for len(b) > 0 {
			off = *(*uint64)(unsafe.Pointer(&b[8]))
			namelen := *(*uint32)(unsafe.Pointer(&b[16]))
			names = append(names, string(b[24:24+namelen]))
			b = b[(24+int(namelen)+7)&^7:]
		}
	}
}

func TestReadDirListsEveryEntryOnce(t *testing.T) {
	share := newHostShare(t)
	want := map[string]bool{".": true, "..": true}
	for i := range 500 {
		name := "entry-" + strings.Repeat("y", i%200) + itoa3(i)
		require.NoError(t, os.WriteFile(filepath.Join(share.src, name), nil, 0o644))
		want[name] = true
	}
	fs := newFS(t, share.src, Options{})
	defer fs.Close()
	for _, size := range []int{400, 4096, 64 << 10} {
		var oo fuse.OpenOut
		require.Equal(t, fuse.OK, fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(rootID)}, &oo))
		got := map[string]bool{}
		for _, n := range readDirNames(t, fs, rootID, oo.Fh, size) {
			require.False(t, got[n], "size %d: %s listed twice", size, n)
			got[n] = true
		}
		require.Equal(t, want, got, "size %d", size)
		fs.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(rootID), Fh: oo.Fh})
	}
}

// An open directory must not keep a read buffer: a guest holding thousands
// of directory handles would otherwise pin 32 KiB each.
func TestOpenDirectoriesHoldNoBuffers(t *testing.T) {
	share := newHostShare(t)
	for i := range 100 {
		require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"+itoa3(i)), nil, 0o644))
	}
	fs := newFS(t, share.src, Options{})
	defer fs.Close()
	const handles = 1000
	before := liveHeap()
	for range handles {
		var oo fuse.OpenOut
		require.Equal(t, fuse.OK, fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(rootID)}, &oo))
		// A small first READDIR leaves entries unsent, as a kernel's does.
		l := fuse.NewDirEntryList(make([]byte, 256), 0)
		require.Equal(t, fuse.OK, fs.ReadDir(nil, &fuse.ReadIn{InHeader: hdr(rootID), Fh: oo.Fh, Size: 256}, l))
		require.NotEmpty(t, l.Bytes())
	}
	grown := int64(liveHeap()) - int64(before)
	t.Logf("%d open directories hold %d KiB of heap", handles, grown>>10)
	require.Less(t, grown, int64(handles*1024), "open directories hold more than 1 KiB of heap each")
}
