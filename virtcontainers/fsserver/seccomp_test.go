package fsserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/errdefs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// More FUSE opcodes (include/uapi/linux/fuse.h).
const (
	opSetattr       = 4
	opReadlink      = 5
	opSymlink       = 6
	opMknod         = 8
	opRmdir         = 11
	opLink          = 13
	opStatfs        = 17
	opFsync         = 20
	opSetxattr      = 21
	opGetxattr      = 22
	opListxattr     = 23
	opRemovexattr   = 24
	opFlush         = 25
	opFsyncdir      = 30
	opAccess        = 34
	opFallocate     = 43
	opReaddirplus   = 44
	opRename2       = 45
	opLseek         = 46
	opCopyFileRange = 47
	opTmpfile       = 51
)

// TestSandboxedDaemonEveryRequest sends every request the daemon serves
// to the namespace-sandboxed daemon under its default seccomp filter
// (kill): a system call missing from the allow-list would kill it, and the
// request would get no reply. Each gets the answer a passthrough file system
// gives, and the daemon is still serving at the end.
func TestSandboxedDaemonEveryRequest(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("0123456789"), 0o644))
	require.NoError(t, os.Symlink("f", filepath.Join(dir, "sl")))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "pipe"), 0o644))
	for _, n := range []string{"f", "sl", "pipe"} {
		require.NoError(t, unix.Lsetxattr(filepath.Join(dir, n), "security.ksg", []byte("host"), 0))
	}
	sock := filepath.Join(t.TempDir(), "vhost.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var daemonLog testutil.SyncBuffer
	cmd := exec.CommandContext(ctx, sandboxd(t), "--shared-dir="+dir, "--socket-path="+sock,
		"--sandbox=namespace", "--xattr", "--thread-pool-size=2", "--log-level=debug")
	cmd.Stdout, cmd.Stderr = &daemonLog, &daemonLog
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	s := connect(t, sock)
	c := s.clients[0]
	_, err := c.init(guestInitFlags)
	require.NoError(t, err)
	call := func(name string, opcode uint32, node uint64, in, payload []byte, outSize int, want syscall.Errno) reply {
		t.Helper()
		r, err := c.call(opcode, node, in, payload, outSize)
		require.NoError(t, err, "%s: no reply; daemon log:\n%s", name, daemonLog.String())
		require.Equal(t, want, r.errno, "%s", name)
		return r
	}
	entry := func(r reply) uint64 { return fromBytes[fuse.EntryOut](r.body).NodeId }
	entrySize := int(unsafe.Sizeof(fuse.EntryOut{}))
	attrSize := int(unsafe.Sizeof(fuse.AttrOut{}))
	const root = fuse.FUSE_ROOT_ID

	f := entry(call("lookup", opLookup, root, nil, cstr("f"), entrySize, 0))
	call("getattr", opGetattr, f, inBody(&fuse.GetAttrIn{}), nil, attrSize, 0)
	d := entry(call("mkdir", opMkdir, root, inBody(&fuse.MkdirIn{Mode: 0o755}), cstr("d"), entrySize, 0))
	call("mknod fifo", opMknod, d, inBody(&fuse.MknodIn{Mode: unix.S_IFIFO | 0o644}), cstr("fifo"), entrySize, 0)
	call("mknod socket", opMknod, d, inBody(&fuse.MknodIn{Mode: unix.S_IFSOCK | 0o644}), cstr("sock"), entrySize, 0)
	call("mknod device", opMknod, d, inBody(&fuse.MknodIn{Mode: unix.S_IFCHR | 0o644, Rdev: uint32(unix.Mkdev(1, 3))}), cstr("null"), entrySize, 0)
	l := entry(call("symlink", opSymlink, d, nil, append(cstr("ln"), cstr("../f")...), entrySize, 0))
	r := call("readlink", opReadlink, l, nil, nil, 4096, 0)
	require.Equal(t, "../f", string(r.body))
	call("link", opLink, d, inBody(&fuse.LinkIn{Oldnodeid: f}), cstr("hard"), entrySize, 0)

	sa := fuse.SetAttrIn{}
	sa.Valid, sa.Mode = fuse.FATTR_MODE, 0o600
	call("setattr mode", opSetattr, f, inBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Uid, sa.Gid = fuse.FATTR_UID|fuse.FATTR_GID, 1000, 1000
	call("setattr owner", opSetattr, f, inBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Mtime, sa.Atime = fuse.FATTR_MTIME|fuse.FATTR_ATIME, 1000, 1000
	call("setattr times", opSetattr, f, inBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Size = fuse.FATTR_SIZE, 8
	call("setattr size", opSetattr, f, inBody(&sa), nil, attrSize, 0)

	// xattrs: the host set security.ksg on f, sl and pipe (the sandbox has
	// no CAP_SYS_ADMIN for trusted.* or security.*); Linux allows user.*
	// only on regular files and directories.
	sx := fuse.SetXAttrIn{Size: 1}
	// Without FUSE_SETXATTR_EXT the request is the first 8 bytes.
	call("setxattr", opSetxattr, f, inBody(&sx)[:8], append(cstr("user.ksg"), 'v'), 0, 0)
	call("getxattr", opGetxattr, f, inBody(&fuse.GetXAttrIn{Size: 64}), cstr("user.ksg"), 64, 0)
	call("removexattr", opRemovexattr, f, nil, cstr("user.ksg"), 0, 0)
	for _, name := range []string{"f", "sl", "pipe"} {
		n := entry(call("lookup "+name, opLookup, root, nil, cstr(name), entrySize, 0))
		r := call("getxattr "+name, opGetxattr, n, inBody(&fuse.GetXAttrIn{Size: 64}), cstr("security.ksg"), 64, 0)
		require.Equal(t, "host", string(r.body), "%s: the file's own xattr", name)
		r = call("listxattr "+name, opListxattr, n, inBody(&fuse.GetXAttrIn{Size: 256}), nil, 256, 0)
		require.Contains(t, string(r.body), "security.ksg\x00")
		if name != "f" {
			call("setxattr user.* "+name, opSetxattr, n, inBody(&sx)[:8], append(cstr("user.ksg"), 'v'), 0, syscall.EPERM)
			call("removexattr "+name, opRemovexattr, n, nil, cstr("user.ksg"), 0, syscall.EPERM)
		}
	}

	fh, errno, err := c.open(f, syscall.O_RDWR)
	require.NoError(t, err)
	require.Zero(t, errno)
	_, err = c.write(f, fh, 0, []byte("abc"))
	require.NoError(t, err)
	_, err = c.read(f, fh, 0, 16)
	require.NoError(t, err)
	call("fallocate", opFallocate, f, inBody(&fuse.FallocateIn{Fh: fh, Length: 4096}), nil, 0, 0)
	call("lseek", opLseek, f, inBody(&fuse.LseekIn{Fh: fh, Whence: unix.SEEK_DATA}), nil, int(unsafe.Sizeof(fuse.LseekOut{})), 0)
	g, gfh, err := c.create(d, "g", 0o644)
	require.NoError(t, err)
	call("copy_file_range", opCopyFileRange, f, inBody(&fuse.CopyFileRangeIn{FhIn: fh, NodeIdOut: g.NodeId, FhOut: gfh, Len: 3}),
		nil, int(unsafe.Sizeof(fuse.WriteOut{})), 0)
	call("fsync", opFsync, f, inBody(&fuse.FsyncIn{Fh: fh}), nil, 0, 0)
	call("fdatasync", opFsync, f, inBody(&fuse.FsyncIn{Fh: fh, FsyncFlags: 1}), nil, 0, 0)
	call("flush", opFlush, f, inBody(&fuse.FlushIn{Fh: fh}), nil, 0, 0)
	call("release", opRelease, f, inBody(&fuse.ReleaseIn{Fh: fh}), nil, 0, 0)
	call("release g", opRelease, g.NodeId, inBody(&fuse.ReleaseIn{Fh: gfh}), nil, 0, 0)
	call("tmpfile", opTmpfile, d, inBody(&fuse.CreateIn{Flags: syscall.O_RDWR, Mode: 0o600}), cstr("tmp"), int(unsafe.Sizeof(fuse.CreateOut{})), 0)

	call("access", opAccess, f, inBody(&fuse.AccessIn{Mask: unix.R_OK}), nil, 0, 0)
	call("statfs", opStatfs, root, nil, nil, int(unsafe.Sizeof(fuse.StatfsOut{})), 0)
	r = call("opendir", opOpendir, d, inBody(&fuse.OpenIn{}), nil, int(unsafe.Sizeof(fuse.OpenOut{})), 0)
	dfh := fromBytes[fuse.OpenOut](r.body).Fh
	call("readdirplus", opReaddirplus, d, inBody(&fuse.ReadIn{Fh: dfh, Size: 8192}), nil, 8192, 0)
	call("fsyncdir", opFsyncdir, d, inBody(&fuse.FsyncIn{Fh: dfh}), nil, 0, 0)
	call("releasedir", opReleasedir, d, inBody(&fuse.ReleaseIn{Fh: dfh}), nil, 0, 0)
	names, err := c.readdir(d)
	require.NoError(t, err)
	require.Subset(t, names, []string{"fifo", "sock", "null", "ln", "hard", "g"})

	call("rename", opRename2, d, inBody(&fuse.RenameIn{Newdir: root}), append(cstr("g"), cstr("g2")...), 0, 0)
	call("rename noreplace", opRename2, root, inBody(&fuse.RenameIn{Newdir: root, Flags: unix.RENAME_NOREPLACE}),
		append(cstr("g2"), cstr("f")...), 0, syscall.EEXIST)
	call("unlink", opUnlink, root, nil, cstr("g2"), 0, 0)
	for _, n := range []string{"fifo", "sock", "null", "ln", "hard"} {
		call("unlink "+n, opUnlink, d, nil, cstr(n), 0, 0)
	}
	call("rmdir", opRmdir, root, nil, cstr("d"), 0, 0)
	call("lookup gone", opLookup, root, nil, cstr("d"), entrySize, syscall.ENOENT)
	call("forget", opForget, l, inBody(&fuse.ForgetIn{Nlookup: 1}), nil, -1, 0)

	select {
	case err := <-done:
		t.Fatalf("daemon exited while serving: %v; log:\n%s", err, daemonLog.String())
	default:
	}
	require.Contains(t, daemonLog.String(), "seccomp=kill")
	s.hiprio.Close()
	c.q.Close()
	s.f.Close()
	select {
	case err := <-done:
		require.NoError(t, err, "log:\n%s", daemonLog.String())
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running after the frontend hung up")
	}
}

// TestServeSeccompWithoutSandbox: without a sandbox there is no process of
// the daemon's own to filter, so an explicit filter is refused before any
// socket exists; not given, or none, the share is served.
func TestServeSeccompWithoutSandbox(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--seccomp=kill"}, "--seccomp=kill needs a sandbox"},
		{[]string{"--seccomp", "log"}, "--seccomp log needs a sandbox"},
		{[]string{"--seccomp=none"}, ""},
		{nil, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			sockDir := t.TempDir()
			o, err := virtiofsd.Parse(append([]string{"--shared-dir=" + t.TempDir(), "--socket-path=" + filepath.Join(sockDir, "s"),
				"--sandbox=none"}, tc.args...))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err = Serve(ctx, o)
			if tc.err == "" {
				require.ErrorIs(t, err, context.DeadlineExceeded, "served until the context ended")
				return
			}
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			require.ErrorContains(t, err, tc.err)
			ents, err := os.ReadDir(sockDir)
			require.NoError(t, err)
			require.Empty(t, ents)
		})
	}
}
