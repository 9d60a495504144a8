package passthroughfs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// These tests call the FS the way a FUSE session does, with requests a
// kernel would never send, and check what reaches the host.

func hdr(nodeid uint64) fuse.InHeader { return fuse.InHeader{NodeId: nodeid} }

func lookup(t *testing.T, fs *FS, parent uint64, name string) (fuse.EntryOut, fuse.Status) {
	t.Helper()
	h := hdr(parent)
	var out fuse.EntryOut
	st := fs.Lookup(nil, &h, name, &out)
	return out, st
}

func mustLookup(t *testing.T, fs *FS, parent uint64, name string) fuse.EntryOut {
	t.Helper()
	out, st := lookup(t, fs, parent, name)
	require.Equal(t, fuse.OK, st, "lookup %q", name)
	return out
}

func count(t *testing.T, fs *FS, nodeid uint64) uint64 {
	t.Helper()
	n, ok := fs.inodes.lookupCount(nodeid)
	require.True(t, ok, "node %d known", nodeid)
	return n
}

func inoOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st))
	return st.Ino
}

func TestNewRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	_, err := New(t.Context(), filepath.Join(dir, "missing"), Options{})
	require.ErrorContains(t, err, "missing")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	_, err = New(t.Context(), filepath.Join(dir, "file"), Options{})
	require.ErrorContains(t, err, "file")
	require.NoError(t, os.Symlink(dir, filepath.Join(dir, "link")))
	_, err = New(t.Context(), filepath.Join(dir, "link"), Options{})
	require.Error(t, err, "the shared directory itself must not be a symlink")
	_, err = New(t.Context(), dir, Options{Cache: "sometimes"})
	require.ErrorContains(t, err, "sometimes")
	_, err = New(t.Context(), dir, Options{MaxIOPerCall: -1})
	require.ErrorContains(t, err, "MaxIOPerCall -1")
	p, err := parseCachePolicy("ALWAYS")
	require.NoError(t, err)
	require.Equal(t, CacheAlways, p)
}

func TestLookupCountsAsTheKernelExpects(t *testing.T) {
	share := newHostShare(t)
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), []byte("x"), 0o644))
	fs := newFS(t, share.src, Options{})
	defer fs.Close()

	a := mustLookup(t, fs, rootID, "f")
	b := mustLookup(t, fs, rootID, "f")
	require.Equal(t, a.NodeId, b.NodeId)
	require.EqualValues(t, 2, count(t, fs, a.NodeId))
	require.Equal(t, inoOf(t, filepath.Join(share.src, "f")), a.Attr.Ino)
	require.EqualValues(t, time.Second, a.EntryTimeout(), "cache=auto")

	// A hard link is the same inode, hence the same node ID.
	require.NoError(t, os.Link(filepath.Join(share.src, "f"), filepath.Join(share.src, "g")))
	require.Equal(t, a.NodeId, mustLookup(t, fs, rootID, "g").NodeId)
	require.EqualValues(t, 3, count(t, fs, a.NodeId))

	fs.Forget(a.NodeId, 3)
	in := fuse.GetAttrIn{InHeader: hdr(a.NodeId)}
	var attr fuse.AttrOut
	require.Equal(t, fuse.EBADF, fs.GetAttr(nil, &in, &attr), "forgotten node IDs answer EBADF")
	c := mustLookup(t, fs, rootID, "f")
	require.Greater(t, c.NodeId, a.NodeId, "node IDs are never reused")

	_, st := lookup(t, fs, rootID, "missing")
	require.Equal(t, fuse.ENOENT, st)
	_, st = lookup(t, fs, 999, "f")
	require.Equal(t, fuse.EBADF, st)
}

func TestHostileNames(t *testing.T) {
	share := newHostShare(t)
	require.NoError(t, os.Mkdir(filepath.Join(share.src, "d"), 0o755))
	fs := newFS(t, share.src, Options{})
	defer fs.Close()
	d := mustLookup(t, fs, rootID, "d")

	bad := []struct {
		name string
		want fuse.Status
	}{
		{"", fuse.EINVAL},
		{".", fuse.EINVAL},
		{"..", fuse.EINVAL},
		{"../" + share.marker, fuse.EINVAL},
		{"d/../../" + share.marker, fuse.EINVAL},
		{"/etc/passwd", fuse.EINVAL},
		{"a\x00b", fuse.EINVAL},
		{strings.Repeat("n", 256), fuse.Status(syscall.ENAMETOOLONG)},
	}
	for _, tc := range bad {
		mk := fuse.MkdirIn{InHeader: hdr(d.NodeId), Mode: 0o755}
		var eo fuse.EntryOut
		require.Equal(t, tc.want, fs.Mkdir(nil, &mk, tc.name, &eo), "mkdir %q", tc.name)
		cr := fuse.CreateIn{InHeader: hdr(d.NodeId), Flags: unix.O_RDWR, Mode: 0o644}
		var co fuse.CreateOut
		require.Equal(t, tc.want, fs.Create(nil, &cr, tc.name, &co), "create %q", tc.name)
		mn := fuse.MknodIn{InHeader: hdr(d.NodeId), Mode: unix.S_IFIFO | 0o644}
		require.Equal(t, tc.want, fs.Mknod(nil, &mn, tc.name, &eo), "mknod %q", tc.name)
		h := hdr(d.NodeId)
		require.Equal(t, tc.want, fs.Symlink(nil, &h, "x", tc.name, &eo), "symlink %q", tc.name)
		require.Equal(t, tc.want, fs.Unlink(nil, &h, tc.name), "unlink %q", tc.name)
		require.Equal(t, tc.want, fs.Rmdir(nil, &h, tc.name), "rmdir %q", tc.name)
		ln := fuse.LinkIn{InHeader: hdr(d.NodeId), Oldnodeid: d.NodeId}
		require.Equal(t, tc.want, fs.Link(nil, &ln, tc.name, &eo), "link %q", tc.name)
		rn := fuse.RenameIn{InHeader: hdr(rootID), Newdir: d.NodeId}
		rn.Opcode = 45
		require.Equal(t, tc.want, fs.Rename(nil, &rn, "d", tc.name), "rename to %q", tc.name)
		require.Equal(t, tc.want, fs.Rename(nil, &rn, tc.name, "x"), "rename from %q", tc.name)
		if tc.name != "." && tc.name != ".." {
			_, st := lookup(t, fs, d.NodeId, tc.name)
			require.Equal(t, tc.want, st, "lookup %q", tc.name)
		}
	}

	// LOOKUP of "." and ".." resolves inside the parent: from the shared
	// root, ".." is the root itself, never the host directory above it.
	up := mustLookup(t, fs, rootID, "..")
	require.EqualValues(t, rootID, up.NodeId)
	require.Equal(t, inoOf(t, share.src), up.Attr.Ino)
	dd := mustLookup(t, fs, d.NodeId, "..")
	require.Equal(t, d.NodeId, dd.NodeId, "RESOLVE_IN_ROOT-like: '..' stays at the parent")
	require.Equal(t, d.NodeId, mustLookup(t, fs, d.NodeId, ".").NodeId)

	// RENAME (opcode 12) has no flags word: whatever follows is ignored.
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "d", "r"), nil, 0o644))
	rn := fuse.RenameIn{InHeader: hdr(d.NodeId), Newdir: d.NodeId, Flags: 0xdead}
	rn.Opcode = opRename
	require.Equal(t, fuse.OK, fs.Rename(nil, &rn, "r", "s"))
	rn.Opcode = 45 // RENAME2 with unknown flags
	require.Equal(t, fuse.EINVAL, fs.Rename(nil, &rn, "s", "t"))
	share.requireUntouched(t)
}

// TestSymlinksAreNeverFollowed points links out of the share and aims every
// operation at the link's node: none may touch the target.
func TestSymlinksAreNeverFollowed(t *testing.T) {
	testutil.RequiresRoot(t)
	share := newHostShare(t)
	outside := filepath.Join(share.base, share.marker)
	require.NoError(t, os.Symlink(outside, filepath.Join(share.src, "abs")))
	require.NoError(t, os.Symlink("../"+share.marker, filepath.Join(share.src, "rel")))
	require.NoError(t, os.Mkdir(filepath.Join(share.src, "d"), 0o755))
	fs := newFS(t, share.src, Options{Xattr: true})
	defer fs.Close()
	var before unix.Stat_t
	require.NoError(t, unix.Stat(outside, &before))
	d := mustLookup(t, fs, rootID, "d")

	for _, name := range []string{"abs", "rel"} {
		e := mustLookup(t, fs, rootID, name)
		require.EqualValues(t, unix.S_IFLNK, e.Attr.Mode&unix.S_IFMT, "the link itself")
		h := hdr(e.NodeId)
		target, st := fs.Readlink(nil, &h)
		require.Equal(t, fuse.OK, st)
		require.Contains(t, string(target), share.marker)

		var oo fuse.OpenOut
		require.Equal(t, fuse.EINVAL, fs.Open(nil, &fuse.OpenIn{InHeader: h, Flags: unix.O_RDWR}, &oo))
		require.Equal(t, fuse.Status(syscall.ENOTDIR), fs.OpenDir(nil, &fuse.OpenIn{InHeader: h}, &oo))
		var ao fuse.AttrOut
		sa := fuse.SetAttrIn{}
		sa.NodeId = e.NodeId
		sa.Valid = fuse.FATTR_SIZE
		require.Equal(t, fuse.EINVAL, fs.SetAttr(nil, &sa, &ao), "truncate through a link")
		sa.Valid, sa.Mode = fuse.FATTR_MODE, 0o777
		require.Equal(t, fuse.ENOTSUP, fs.SetAttr(nil, &sa, &ao), "Linux cannot chmod a symlink")
		sa.Valid, sa.Mtime = fuse.FATTR_MTIME, 12345
		require.Equal(t, fuse.OK, fs.SetAttr(nil, &sa, &ao))
		require.EqualValues(t, 12345, ao.Mtime, "the link's own mtime")
		sa.Valid, sa.Uid, sa.Gid = fuse.FATTR_UID|fuse.FATTR_GID, 4242, 4242
		require.Equal(t, fuse.OK, fs.SetAttr(nil, &sa, &ao))
		require.EqualValues(t, 4242, ao.Uid, "lchown semantics")
		sx := fuse.SetXAttrIn{InHeader: h, Size: 1}
		require.Equal(t, fuse.OK, fs.SetXAttr(nil, &sx, "trusted.ksg", []byte("x")))
		_, err := unix.Lgetxattr(filepath.Join(share.src, name), "trusted.ksg", nil)
		require.NoError(t, err, "set on the link itself")
		var eo fuse.EntryOut
		ln := fuse.LinkIn{InHeader: hdr(d.NodeId), Oldnodeid: e.NodeId}
		require.Equal(t, fuse.OK, fs.Link(nil, &ln, "hard-"+name, &eo))
		require.EqualValues(t, unix.S_IFLNK, eo.Attr.Mode&unix.S_IFMT, "a hard link to the link, not its target")
	}
	var after unix.Stat_t
	require.NoError(t, unix.Stat(outside, &after))
	require.Equal(t, before.Mode, after.Mode, "target mode")
	require.Equal(t, before.Mtim, after.Mtim, "target mtime")
	require.Equal(t, before.Uid, after.Uid, "target owner")
	require.EqualValues(t, 1, after.Nlink, "target gained no hard link")
	_, err := unix.Getxattr(outside, "trusted.ksg", nil)
	require.Error(t, err, "target xattrs untouched")
	share.requireUntouched(t)
}

func TestCachePolicies(t *testing.T) {
	share := newHostShare(t)
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), nil, 0o644))
	for _, tc := range []struct {
		cache             CachePolicy
		timeout           time.Duration
		file, dir, create uint32
		readdirplus       bool
	}{
		{CacheNever, 0, fuse.FOPEN_DIRECT_IO, 0, fuse.FOPEN_DIRECT_IO, false},
		{CacheMetadata, 24 * time.Hour, fuse.FOPEN_DIRECT_IO, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, fuse.FOPEN_DIRECT_IO, true},
		{CacheAuto, time.Second, 0, 0, 0, true},
		{"", time.Second, 0, 0, 0, true},
		{CacheAlways, 24 * time.Hour, fuse.FOPEN_KEEP_CACHE, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, fuse.FOPEN_KEEP_CACHE, true},
	} {
		t.Run(string(tc.cache), func(t *testing.T) {
			fs := newFS(t, share.src, Options{Cache: tc.cache})
			defer fs.Close()
			e := mustLookup(t, fs, rootID, "f")
			require.Equal(t, tc.timeout, e.EntryTimeout())
			require.Equal(t, tc.timeout, e.AttrTimeout())
			var ao fuse.AttrOut
			require.Equal(t, fuse.OK, fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(e.NodeId)}, &ao))
			require.Equal(t, tc.timeout, ao.Timeout())
			var oo fuse.OpenOut
			require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDONLY}, &oo))
			require.Equal(t, tc.file, oo.OpenFlags)
			require.Equal(t, fuse.OK, fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(rootID)}, &oo))
			require.Equal(t, tc.dir, oo.OpenFlags)
			var co fuse.CreateOut
			require.Equal(t, fuse.OK, fs.Create(nil, &fuse.CreateIn{InHeader: hdr(rootID), Flags: unix.O_RDWR, Mode: 0o644}, "c-"+string(tc.cache), &co))
			require.Equal(t, tc.create, co.OpenFlags)
			require.Equal(t, !tc.readdirplus, fs.MountOptions().DisableReadDirPlus)
		})
	}
}

// TestSubmounts mounts filesystems inside the share, as volumes are inside
// Kata's shared directory.
func TestSubmounts(t *testing.T) {
	testutil.RequiresRoot(t)
	share := newHostShare(t)
	vol := filepath.Join(share.src, "vol")
	bind := filepath.Join(share.src, "bind")
	plain := filepath.Join(share.src, "plain")
	for _, d := range []string{vol, bind, plain, filepath.Join(share.src, "src")} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	require.NoError(t, unix.Mount("tmpfs", vol, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })
	// A bind mount of a directory of the same filesystem: same st_dev,
	// another mount ID.
	require.NoError(t, unix.Mount(filepath.Join(share.src, "src"), bind, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })
	require.NoError(t, os.Mkdir(filepath.Join(vol, "inner"), 0o755))

	for _, tc := range []struct {
		name     string
		announce bool
		kernel   uint64
		want     map[string]bool
	}{
		{"announced", true, fuse.CAP_SUBMOUNTS, map[string]bool{"vol": true, "bind": true, "plain": false}},
		{"not configured", false, fuse.CAP_SUBMOUNTS, map[string]bool{"vol": false, "bind": false, "plain": false}},
		{"kernel without submounts", true, 0, map[string]bool{"vol": false, "bind": false, "plain": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFS(t, share.src, Options{AnnounceSubmounts: tc.announce})
			defer fs.Close()
			fs.SetKernelCapabilities(tc.kernel)
			for name, want := range tc.want {
				e := mustLookup(t, fs, rootID, name)
				require.Equal(t, want, e.Attr.Flags&fuse.ATTR_SUBMOUNT != 0, "%s", name)
			}
			// Inside the submount, directories are on the same mount.
			v := mustLookup(t, fs, rootID, "vol")
			require.Zero(t, mustLookup(t, fs, v.NodeId, "inner").Attr.Flags&fuse.ATTR_SUBMOUNT)
			// READDIRPLUS announces as LOOKUP does.
			for _, e := range readDirPlus(t, fs, rootID, 64<<10) {
				if want, ok := tc.want[e.name]; ok {
					require.Equal(t, want, e.out.Attr.Flags&fuse.ATTR_SUBMOUNT != 0, "readdirplus %s", e.name)
				}
			}
			ino := fs.inodes.get(v.NodeId)
			require.Equal(t, tc.want["vol"], ino.submount, "table remembers the announcement")
			require.Nil(t, ino.handle(), "file handles only serve recovery, which is off")
			ino.release()
			p := fs.inodes.get(mustLookup(t, fs, rootID, "plain").NodeId)
			require.Nil(t, p.handle(), "no handle for ordinary directories")
			p.release()
		})
	}
}

type plusEntry struct {
	name string
	out  fuse.EntryOut
}

// readDirPlus lists a directory with READDIRPLUS in requests of size bytes
// and decodes the replies as the kernel does.
func readDirPlus(t *testing.T, fs *FS, nodeid uint64, size int) []plusEntry {
	t.Helper()
	var oo fuse.OpenOut
	require.Equal(t, fuse.OK, fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(nodeid)}, &oo))
	defer fs.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(nodeid), Fh: oo.Fh})
	var all []plusEntry
	off := uint64(0)
	for {
		buf := make([]byte, size)
		l := fuse.NewDirEntryList(buf, off)
		in := fuse.ReadIn{InHeader: hdr(nodeid), Fh: oo.Fh, Offset: off, Size: uint32(size)}
		require.Equal(t, fuse.OK, fs.ReadDirPlus(nil, &in, l))
		b := l.Bytes()
		if len(b) == 0 {
			return all
		}
		for len(b) > 0 {
			var e plusEntry
			e.out = *(*fuse.EntryOut)(unsafe.Pointer(&b[0]))
			b = b[unsafe.Sizeof(fuse.EntryOut{}):]
			doff := *(*uint64)(unsafe.Pointer(&b[8]))
			namelen := *(*uint32)(unsafe.Pointer(&b[16]))
			e.name = string(b[24 : 24+namelen])
			rec := (24 + int(namelen) + 7) &^ 7
			b = b[rec:]
			off = doff
			all = append(all, e)
		}
	}
}

// decodePlus returns the entries of one READDIRPLUS reply.
func decodePlus(b []byte) []fuse.EntryOut {
	var out []fuse.EntryOut
	for len(b) > 0 {
		out = append(out, *(*fuse.EntryOut)(unsafe.Pointer(&b[0])))
		b = b[unsafe.Sizeof(fuse.EntryOut{}):]
		namelen := *(*uint32)(unsafe.Pointer(&b[16]))
		b = b[(24+int(namelen)+7)&^7:]
	}
	return out
}

func TestReadDirPlusCountsEveryEntryOnce(t *testing.T) {
	share := newHostShare(t)
	for i := 0; i < 300; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(share.src, "file-"+strings.Repeat("x", i%40)+string(rune('a'+i%26))+itoa3(i)), nil, 0o644))
	}
	fs := newFS(t, share.src, Options{})
	defer fs.Close()
	// Small requests: many entries do not fit and must give their lookup back.
	ents := readDirPlus(t, fs, rootID, 700)
	names := map[string]bool{}
	for _, e := range ents {
		require.False(t, names[e.name], "%s listed twice", e.name)
		names[e.name] = true
		if e.name == "." || e.name == ".." {
			require.Zero(t, e.out.NodeId, "no lookup on %s", e.name)
			continue
		}
		require.NotZero(t, e.out.NodeId)
		require.EqualValues(t, 1, count(t, fs, e.out.NodeId), "%s counted once", e.name)
	}
	require.Len(t, names, 302)
	require.Equal(t, 301, fs.inodes.len(), "the root and one inode per file")
	for _, e := range ents {
		fs.Forget(e.out.NodeId, 1)
	}
	require.Equal(t, 1, fs.inodes.len())
}

func itoa3(i int) string {
	return string([]byte{byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

// TestDataPathDoesNotAllocate holds the READ and WRITE paths to zero heap
// allocations per request, also when they are served in pieces that end
// inside the request's segments.
func TestDataPathDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"one call", Options{}},
		{"48 KiB pieces across 64 KiB segments", Options{MaxIOPerCall: 48 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), make([]byte, 1<<20), 0o644))
			fs := newFS(t, share.src, tc.opts)
			defer fs.Close()
			e := mustLookup(t, fs, rootID, "f")
			var oo fuse.OpenOut
			require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDWR}, &oo))
			buf := make([]byte, 128<<10)
			iov := [][]byte{buf[:64<<10], buf[64<<10:]}
			rin := fuse.ReadIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Offset: 4096, Size: uint32(len(buf))}
			win := fuse.WriteIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Offset: 8192, Size: uint32(len(buf))}
			allocs := testing.AllocsPerRun(200, func() {
				r, st := fs.Read(nil, &rin, buf)
				if st != fuse.OK {
					t.Fatal(st)
				}
				n, st := r.(interface {
					Readv([][]byte) (int, fuse.Status)
				}).Readv(iov)
				if st != fuse.OK || n != len(buf) {
					t.Fatal(n, st)
				}
				r.Done()
				if n, st := fs.Writev(nil, &win, iov); st != fuse.OK || int(n) != len(buf) {
					t.Fatal(n, st)
				}
			})
			require.Zero(t, allocs, "allocations per READ+WRITE")
		})
	}
}
