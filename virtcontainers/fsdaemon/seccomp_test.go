package fsdaemon

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

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

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
	_, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	call := func(name string, opcode uint32, node uint64, in, payload []byte, outSize int, want syscall.Errno) fst.Reply {
		t.Helper()
		r, err := c.Call(opcode, node, in, payload, outSize)
		require.NoError(t, err, "%s: no reply; daemon log:\n%s", name, daemonLog.String())
		require.Equal(t, want, r.Errno, "%s", name)
		return r
	}
	entry := func(r fst.Reply) uint64 { return fst.FromBytes[fuse.EntryOut](r.Body).NodeId }
	entrySize := int(unsafe.Sizeof(fuse.EntryOut{}))
	attrSize := int(unsafe.Sizeof(fuse.AttrOut{}))
	const root = fuse.FUSE_ROOT_ID

	f := entry(call("lookup", fst.OpLookup, root, nil, fst.Cstr("f"), entrySize, 0))
	call("getattr", fst.OpGetattr, f, fst.InBody(&fuse.GetAttrIn{}), nil, attrSize, 0)
	d := entry(call("mkdir", fst.OpMkdir, root, fst.InBody(&fuse.MkdirIn{Mode: 0o755}), fst.Cstr("d"), entrySize, 0))
	call("mknod fifo", opMknod, d, fst.InBody(&fuse.MknodIn{Mode: unix.S_IFIFO | 0o644}), fst.Cstr("fifo"), entrySize, 0)
	call("mknod socket", opMknod, d, fst.InBody(&fuse.MknodIn{Mode: unix.S_IFSOCK | 0o644}), fst.Cstr("sock"), entrySize, 0)
	call("mknod device", opMknod, d, fst.InBody(&fuse.MknodIn{Mode: unix.S_IFCHR | 0o644, Rdev: uint32(unix.Mkdev(1, 3))}), fst.Cstr("null"), entrySize, 0)
	l := entry(call("symlink", opSymlink, d, nil, append(fst.Cstr("ln"), fst.Cstr("../f")...), entrySize, 0))
	r := call("readlink", opReadlink, l, nil, nil, 4096, 0)
	require.Equal(t, "../f", string(r.Body))
	call("link", opLink, d, fst.InBody(&fuse.LinkIn{Oldnodeid: f}), fst.Cstr("hard"), entrySize, 0)

	sa := fuse.SetAttrIn{}
	sa.Valid, sa.Mode = fuse.FATTR_MODE, 0o600
	call("setattr mode", opSetattr, f, fst.InBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Uid, sa.Gid = fuse.FATTR_UID|fuse.FATTR_GID, 1000, 1000
	call("setattr owner", opSetattr, f, fst.InBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Mtime, sa.Atime = fuse.FATTR_MTIME|fuse.FATTR_ATIME, 1000, 1000
	call("setattr times", opSetattr, f, fst.InBody(&sa), nil, attrSize, 0)
	sa.Valid, sa.Size = fuse.FATTR_SIZE, 8
	call("setattr size", opSetattr, f, fst.InBody(&sa), nil, attrSize, 0)

	// xattrs: the host set security.ksg on f, sl and pipe (the sandbox has
	// no CAP_SYS_ADMIN for trusted.* or security.*); Linux allows user.*
	// only on regular files and directories.
	sx := fuse.SetXAttrIn{Size: 1}
	// Without FUSE_SETXATTR_EXT the request is the first 8 bytes.
	call("setxattr", opSetxattr, f, fst.InBody(&sx)[:8], append(fst.Cstr("user.ksg"), 'v'), 0, 0)
	call("getxattr", opGetxattr, f, fst.InBody(&fuse.GetXAttrIn{Size: 64}), fst.Cstr("user.ksg"), 64, 0)
	call("removexattr", opRemovexattr, f, nil, fst.Cstr("user.ksg"), 0, 0)
	for _, name := range []string{"f", "sl", "pipe"} {
		n := entry(call("lookup "+name, fst.OpLookup, root, nil, fst.Cstr(name), entrySize, 0))
		r := call("getxattr "+name, opGetxattr, n, fst.InBody(&fuse.GetXAttrIn{Size: 64}), fst.Cstr("security.ksg"), 64, 0)
		require.Equal(t, "host", string(r.Body), "%s: the file's own xattr", name)
		r = call("listxattr "+name, opListxattr, n, fst.InBody(&fuse.GetXAttrIn{Size: 256}), nil, 256, 0)
		require.Contains(t, string(r.Body), "security.ksg\x00")
		if name != "f" {
			call("setxattr user.* "+name, opSetxattr, n, fst.InBody(&sx)[:8], append(fst.Cstr("user.ksg"), 'v'), 0, syscall.EPERM)
			call("removexattr "+name, opRemovexattr, n, nil, fst.Cstr("user.ksg"), 0, syscall.EPERM)
		}
	}

	fh, errno, err := c.Open(f, syscall.O_RDWR)
	require.NoError(t, err)
	require.Zero(t, errno)
	_, err = c.Write(f, fh, 0, []byte("abc"))
	require.NoError(t, err)
	_, err = c.Read(f, fh, 0, 16)
	require.NoError(t, err)
	call("fallocate", opFallocate, f, fst.InBody(&fuse.FallocateIn{Fh: fh, Length: 4096}), nil, 0, 0)
	call("lseek", opLseek, f, fst.InBody(&fuse.LseekIn{Fh: fh, Whence: unix.SEEK_DATA}), nil, int(unsafe.Sizeof(fuse.LseekOut{})), 0)
	g, gfh, err := c.Create(d, "g", 0o644)
	require.NoError(t, err)
	call("copy_file_range", opCopyFileRange, f, fst.InBody(&fuse.CopyFileRangeIn{FhIn: fh, NodeIdOut: g.NodeId, FhOut: gfh, Len: 3}),
		nil, int(unsafe.Sizeof(fuse.WriteOut{})), 0)
	call("fsync", opFsync, f, fst.InBody(&fuse.FsyncIn{Fh: fh}), nil, 0, 0)
	call("fdatasync", opFsync, f, fst.InBody(&fuse.FsyncIn{Fh: fh, FsyncFlags: 1}), nil, 0, 0)
	call("flush", opFlush, f, fst.InBody(&fuse.FlushIn{Fh: fh}), nil, 0, 0)
	call("release", fst.OpRelease, f, fst.InBody(&fuse.ReleaseIn{Fh: fh}), nil, 0, 0)
	call("release g", fst.OpRelease, g.NodeId, fst.InBody(&fuse.ReleaseIn{Fh: gfh}), nil, 0, 0)
	call("tmpfile", opTmpfile, d, fst.InBody(&fuse.CreateIn{Flags: syscall.O_RDWR, Mode: 0o600}), fst.Cstr("tmp"), int(unsafe.Sizeof(fuse.CreateOut{})), 0)

	call("access", opAccess, f, fst.InBody(&fuse.AccessIn{Mask: unix.R_OK}), nil, 0, 0)
	call("statfs", opStatfs, root, nil, nil, int(unsafe.Sizeof(fuse.StatfsOut{})), 0)
	r = call("opendir", fst.OpOpendir, d, fst.InBody(&fuse.OpenIn{}), nil, int(unsafe.Sizeof(fuse.OpenOut{})), 0)
	dfh := fst.FromBytes[fuse.OpenOut](r.Body).Fh
	call("readdirplus", opReaddirplus, d, fst.InBody(&fuse.ReadIn{Fh: dfh, Size: 8192}), nil, 8192, 0)
	call("fsyncdir", opFsyncdir, d, fst.InBody(&fuse.FsyncIn{Fh: dfh}), nil, 0, 0)
	call("releasedir", fst.OpReleasedir, d, fst.InBody(&fuse.ReleaseIn{Fh: dfh}), nil, 0, 0)
	names, err := c.ReadDir(d)
	require.NoError(t, err)
	require.Subset(t, names, []string{"fifo", "sock", "null", "ln", "hard", "g"})

	call("rename", opRename2, d, fst.InBody(&fuse.RenameIn{Newdir: root}), append(fst.Cstr("g"), fst.Cstr("g2")...), 0, 0)
	call("rename noreplace", opRename2, root, fst.InBody(&fuse.RenameIn{Newdir: root, Flags: unix.RENAME_NOREPLACE}),
		append(fst.Cstr("g2"), fst.Cstr("f")...), 0, syscall.EEXIST)
	call("unlink", fst.OpUnlink, root, nil, fst.Cstr("g2"), 0, 0)
	for _, n := range []string{"fifo", "sock", "null", "ln", "hard"} {
		call("unlink "+n, fst.OpUnlink, d, nil, fst.Cstr(n), 0, 0)
	}
	call("rmdir", opRmdir, root, nil, fst.Cstr("d"), 0, 0)
	call("lookup gone", fst.OpLookup, root, nil, fst.Cstr("d"), entrySize, syscall.ENOENT)
	call("forget", fst.OpForget, l, fst.InBody(&fuse.ForgetIn{Nlookup: 1}), nil, -1, 0)

	select {
	case err := <-done:
		t.Fatalf("daemon exited while serving: %v; log:\n%s", err, daemonLog.String())
	default:
	}
	require.Contains(t, daemonLog.String(), "seccomp=kill")
	s.hangUp(t, done, "log:\n%s", daemonLog.String())
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
