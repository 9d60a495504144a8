package passthroughfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// snapshot describes every file under dir: type, mode, owner, size, mtime,
// content of regular files and link targets.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(path, &st))
		desc := fmt.Sprintf("mode=%o uid=%d size=%d mtime=%d.%d", st.Mode, st.Uid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			desc += " data=" + string(b)
		case unix.S_IFLNK:
			target, err := os.Readlink(path)
			require.NoError(t, err)
			desc += " target=" + target
		}
		out[path] = desc
		return nil
	}))
	return out
}

// readOnlyShare is a share with a file, a directory and a symlink.
func readOnlyShare(t *testing.T) hostShare {
	share := newHostShare(t)
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), []byte("data"), 0o666))
	require.NoError(t, os.Mkdir(filepath.Join(share.src, "d"), 0o777))
	require.NoError(t, os.Symlink("f", filepath.Join(share.src, "l")))
	return share
}

// TestReadOnlyRefusesEveryChange sends every modifying request to a
// read-only FS, as a guest could, and checks that each gets EROFS and the
// share is unchanged, while reading still works.
func TestReadOnlyRefusesEveryChange(t *testing.T) {
	share := readOnlyShare(t)
	before := snapshot(t, share.src)
	fs := newFS(t, share.src, Options{ReadOnly: true, Xattr: true})
	defer fs.Close()
	f := mustLookup(t, fs, rootID, "f")
	d := mustLookup(t, fs, rootID, "d")
	l := mustLookup(t, fs, rootID, "l")

	// Reading works.
	var oo fuse.OpenOut
	require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f.NodeId), Flags: unix.O_RDONLY}, &oo))
	fh := oo.Fh
	r, st := fs.Read(nil, &fuse.ReadIn{InHeader: hdr(f.NodeId), Fh: fh, Size: 100}, nil)
	require.Equal(t, fuse.OK, st)
	got, st := r.Bytes(make([]byte, 100))
	require.Equal(t, fuse.OK, st)
	require.Equal(t, "data", string(got))
	r.Done()
	var co fuse.CreateOut
	require.Equal(t, fuse.OK, fs.Create(nil, &fuse.CreateIn{InHeader: hdr(rootID), Flags: unix.O_RDONLY | unix.O_CREAT, Mode: 0o644}, "f", &co),
		"O_CREAT without O_EXCL on an existing file opens it for reading")
	require.Equal(t, f.NodeId, co.NodeId)
	require.Equal(t, fuse.OK, fs.Access(nil, &fuse.AccessIn{InHeader: hdr(f.NodeId), Mask: unix.R_OK}))
	require.Equal(t, fuse.OK, fs.Fsync(nil, &fuse.FsyncIn{InHeader: hdr(f.NodeId), Fh: fh}))
	require.Equal(t, fuse.OK, fs.Flush(nil, &fuse.FlushIn{InHeader: hdr(f.NodeId), Fh: fh}))
	var ao fuse.AttrOut
	require.Equal(t, fuse.OK, fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(f.NodeId)}, &ao))
	var so fuse.StatfsOut
	fh0 := hdr(rootID)
	require.Equal(t, fuse.OK, fs.StatFs(nil, &fh0, &so))

	var eo fuse.EntryOut
	setattr := func(valid uint32) func() fuse.Status {
		return func() fuse.Status {
			in := fuse.SetAttrIn{}
			in.NodeId, in.Valid, in.Mode, in.Size, in.Mtime = f.NodeId, valid, 0o600, 0, 1
			return fs.SetAttr(nil, &in, &ao)
		}
	}
	rename := func(opcode uint32, flags uint32) func() fuse.Status {
		return func() fuse.Status {
			in := fuse.RenameIn{InHeader: hdr(rootID), Newdir: d.NodeId, Flags: flags}
			in.Opcode = opcode
			return fs.Rename(nil, &in, "f", "g")
		}
	}
	create := func(name string, flags uint32) func() fuse.Status {
		return func() fuse.Status {
			return fs.Create(nil, &fuse.CreateIn{InHeader: hdr(rootID), Flags: flags, Mode: 0o644}, name, &co)
		}
	}
	open := func(node uint64, flags uint32) func() fuse.Status {
		return func() fuse.Status { return fs.Open(nil, &fuse.OpenIn{InHeader: hdr(node), Flags: flags}, &oo) }
	}
	access := func(node uint64) func() fuse.Status {
		return func() fuse.Status { return fs.Access(nil, &fuse.AccessIn{InHeader: hdr(node), Mask: unix.W_OK}) }
	}
	for _, tc := range []struct {
		name string
		call func() fuse.Status
	}{
		{"mkdir", func() fuse.Status {
			return fs.Mkdir(nil, &fuse.MkdirIn{InHeader: hdr(rootID), Mode: 0o755}, "new", &eo)
		}},
		{"mknod", func() fuse.Status {
			return fs.Mknod(nil, &fuse.MknodIn{InHeader: hdr(rootID), Mode: unix.S_IFIFO | 0o644}, "new", &eo)
		}},
		{"symlink", func() fuse.Status { h := hdr(rootID); return fs.Symlink(nil, &h, "f", "new", &eo) }},
		{"link", func() fuse.Status {
			return fs.Link(nil, &fuse.LinkIn{InHeader: hdr(rootID), Oldnodeid: f.NodeId}, "new", &eo)
		}},
		{"unlink", func() fuse.Status { h := hdr(rootID); return fs.Unlink(nil, &h, "f") }},
		{"rmdir", func() fuse.Status { h := hdr(rootID); return fs.Rmdir(nil, &h, "d") }},
		{"rename", rename(opRename, 0)},
		{"rename2 exchange", rename(45, unix.RENAME_EXCHANGE)},
		{"setattr mode", setattr(fuse.FATTR_MODE)},
		{"setattr size", setattr(fuse.FATTR_SIZE)},
		{"setattr mtime", setattr(fuse.FATTR_MTIME)},
		{"create new", create("new", unix.O_RDONLY|unix.O_CREAT)},
		{"create existing for writing", create("f", unix.O_WRONLY|unix.O_CREAT)},
		{"create existing with O_TRUNC", create("f", unix.O_RDONLY|unix.O_CREAT|unix.O_TRUNC)},
		{"create with O_EXCL", create("f", unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL)},
		{"tmpfile", func() fuse.Status {
			return fs.Tmpfile(nil, &fuse.CreateIn{InHeader: hdr(d.NodeId), Flags: unix.O_RDWR, Mode: 0o600}, &co)
		}},
		{"open for writing", open(f.NodeId, unix.O_WRONLY)},
		{"open read-write", open(f.NodeId, unix.O_RDWR)},
		{"open with O_TRUNC", open(f.NodeId, unix.O_RDONLY|unix.O_TRUNC)},
		{"write", func() fuse.Status {
			_, st := fs.Write(nil, &fuse.WriteIn{InHeader: hdr(f.NodeId), Fh: fh, Size: 1}, []byte("x"))
			return st
		}},
		{"fallocate", func() fuse.Status {
			return fs.Fallocate(nil, &fuse.FallocateIn{InHeader: hdr(f.NodeId), Fh: fh, Length: 4096})
		}},
		{"copy_file_range", func() fuse.Status {
			_, st := fs.CopyFileRange(nil, &fuse.CopyFileRangeIn{InHeader: hdr(f.NodeId), FhIn: fh, NodeIdOut: f.NodeId, FhOut: fh, OffOut: 4, Len: 4})
			return st
		}},
		{"setxattr", func() fuse.Status {
			return fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hdr(f.NodeId), Size: 1}, "user.k", []byte("v"))
		}},
		{"removexattr", func() fuse.Status { h := hdr(f.NodeId); return fs.RemoveXAttr(nil, &h, "user.k") }},
		{"access W_OK on a file", access(f.NodeId)},
		{"access W_OK on a directory", access(d.NodeId)},
		{"access W_OK on a symlink", access(l.NodeId)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, fuse.Status(syscall.EROFS), tc.call())
		})
	}
	require.Equal(t, before, snapshot(t, share.src), "the read-only share changed")
	share.requireUntouched(t)
}

// TestReadOnlyOverFUSE mounts a read-only FS through the kernel's FUSE client
// and checks what programs see.
func TestReadOnlyOverFUSE(t *testing.T) {
	share := readOnlyShare(t)
	before := snapshot(t, share.src)
	mnt := mountFS(t, newFS(t, share.src, Options{ReadOnly: true, Xattr: true}))
	f := filepath.Join(mnt, "f")

	b, err := os.ReadFile(f)
	require.NoError(t, err)
	require.Equal(t, "data", string(b))
	existing, err := os.OpenFile(f, os.O_RDONLY|os.O_CREATE, 0o644)
	require.NoError(t, err, "O_CREAT on an existing file, for reading")
	existing.Close()
	ents, err := os.ReadDir(mnt)
	require.NoError(t, err)
	require.Len(t, ents, 3)

	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644) }},
		{"open for writing", func() error {
			w, err := os.OpenFile(f, os.O_WRONLY, 0)
			if err == nil {
				w.Close()
			}
			return err
		}},
		{"os.Create an existing file", func() error {
			w, err := os.Create(f)
			if err == nil {
				w.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(f, 0) }},
		{"chmod", func() error { return os.Chmod(f, 0o600) }},
		{"chown", func() error { return os.Lchown(f, 1, 1) }},
		{"utimes", func() error { return unix.UtimesNano(f, []unix.Timespec{{Sec: 1}, {Sec: 1}}) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(mnt, "nd"), 0o755) }},
		{"mknod", func() error { return unix.Mkfifo(filepath.Join(mnt, "fifo"), 0o644) }},
		{"symlink", func() error { return os.Symlink("f", filepath.Join(mnt, "nl")) }},
		{"link", func() error { return os.Link(f, filepath.Join(mnt, "hard")) }},
		{"unlink", func() error { return os.Remove(f) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(mnt, "d")) }},
		{"rename", func() error { return os.Rename(f, filepath.Join(mnt, "d", "g")) }},
		{"tmpfile", func() error {
			fd, err := unix.Open(filepath.Join(mnt, "d"), unix.O_TMPFILE|unix.O_RDWR, 0o600)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"setxattr", func() error { return unix.Setxattr(f, "user.k", []byte("v"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(f, "user.k") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			require.True(t, errors.Is(err, syscall.EROFS), "want EROFS, got %v", err)
		})
	}
	require.Equal(t, before, snapshot(t, share.src), "the read-only share changed")
}

// TestPreserveNoatime checks that the guest's O_NOATIME reaches the host only
// with PreserveNoatime.
func TestPreserveNoatime(t *testing.T) {
	share := newHostShare(t)
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), []byte("x"), 0o644))
	for _, preserve := range []bool{false, true} {
		t.Run(fmt.Sprint("preserve=", preserve), func(t *testing.T) {
			fs := newFS(t, share.src, Options{PreserveNoatime: preserve})
			defer fs.Close()
			e := mustLookup(t, fs, rootID, "f")
			var oo fuse.OpenOut
			require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDONLY | unix.O_NOATIME}, &oo))
			h := fs.handles.get(oo.Fh, e.NodeId)
			require.NotNil(t, h)
			defer h.release()
			flags, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
			require.NoError(t, err)
			require.Equal(t, preserve, flags&unix.O_NOATIME != 0, "host flags %#o", flags)
		})
	}
}

// TestAllowMmapNegotiated checks the INIT reply: FUSE_DIRECT_IO_ALLOW_MMAP
// only with AllowMmap, and only when the kernel offers it.
func TestAllowMmapNegotiated(t *testing.T) {
	share := newHostShare(t)
	for _, tc := range []struct {
		allow, offered, want bool
	}{
		{false, true, false},
		{true, true, true},
		{true, false, false},
	} {
		t.Run(fmt.Sprintf("allow=%v,offered=%v", tc.allow, tc.offered), func(t *testing.T) {
			fs := newFS(t, share.src, Options{Cache: CacheNever, AllowMmap: tc.allow})
			defer fs.Close()
			w := &wire{t: t, ps: fuse.NewProtocolServer(fs, fs.MountOptions())}
			init := fuse.InitIn{Major: 7, Minor: 39, MaxReadAhead: 128 << 10}
			init.Flags = uint32(fuse.CAP_ASYNC_READ | fuse.CAP_SUBMOUNTS | fuse.CAP_INIT_EXT)
			if tc.offered {
				init.Flags2 = uint32(fuse.CAP_DIRECT_IO_ALLOW_MMAP >> 32)
			}
			st, body := w.call([][]byte{request(w, 26, 0, &init, nil)}, 4096)
			require.Zero(t, st)
			out := (*fuse.InitOut)(unsafe.Pointer(&body[0]))
			require.Equal(t, tc.want, out.Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0, "flags %#x", out.Flags64())
		})
	}
}

// TestAllowMmapOverFUSE maps a file of a cache=never share shared and
// writable, which the kernel allows on a direct-I/O file only when the daemon
// agreed to FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6 and later). The mapping is
// made in a helper process (see TestMain).
func TestAllowMmapOverFUSE(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprint("allow=", allow), func(t *testing.T) {
			share := newHostShare(t)
			require.NoError(t, os.WriteFile(filepath.Join(share.src, "f"), make([]byte, 4096), 0o644))
			mnt := mountFS(t, newFS(t, share.src, Options{Cache: CacheNever, AllowMmap: allow}))
			helper := exec.Command(os.Args[0])
			helper.Env = append(os.Environ(), mmapHelperEnv+"="+filepath.Join(mnt, "f"))
			out, err := helper.CombinedOutput()
			if !allow {
				require.Error(t, err, "a shared mapping of a direct-I/O file without the flag: %s", out)
				require.Contains(t, string(out), "mmap: "+unix.ENODEV.Error())
				return
			}
			require.NoError(t, err, "%s", out)
			b, err := os.ReadFile(filepath.Join(share.src, "f"))
			require.NoError(t, err)
			require.Equal(t, "mapped", string(b[:6]))
		})
	}
}

// mmapHelperEnv names the file the test binary, run as a helper, maps.
const mmapHelperEnv = "KSG_TEST_MMAP_WRITE"

// TestMain runs the test binary as the helper that writes "mapped" through a
// shared mapping when mmapHelperEnv is set. The mapping must not live in the
// process serving the mount: a page fault on it waits for our own server,
// and a stop-the-world in that process waits for the faulting thread, which
// deadlocks the whole runtime.
func TestMain(m *testing.M) {
	if path := os.Getenv(mmapHelperEnv); path != "" {
		if err := writeThroughMapping(path, "mapped"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// As the daemon does before it serves (see New).
	syscall.Umask(0)
	os.Exit(m.Run())
}

func writeThroughMapping(path, s string) error {
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	m, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	copy(m, s)
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	return unix.Munmap(m)
}
