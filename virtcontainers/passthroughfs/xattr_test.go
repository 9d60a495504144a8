package passthroughfs

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// makeSpecialFiles creates a symlink, a FIFO, a socket and a character
// device in dir, and returns their names.
func makeSpecialFiles(t *testing.T, dir string) []string {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "target"), []byte("t"), 0o644))
	require.NoError(t, os.Symlink("target", filepath.Join(dir, "link")))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	require.NoError(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
	return []string{"link", "fifo", "sock", "null"}
}

// checkSpecialXattrs runs the four xattr requests on each special file
// through fs and checks the host, where dir is the share as this process
// sees it. trusted.* because Linux allows user.* only on regular files and
// directories (the errno of which is checked too).
func checkSpecialXattrs(t *testing.T, fs *FS, dir string, names []string) {
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			e := mustLookup(t, fs, rootID, name)
			h := hdr(e.NodeId)
			sx := fuse.SetXAttrIn{InHeader: h, Size: 5}
			require.Equal(t, fuse.OK, fs.SetXAttr(nil, &sx, "trusted.ksg", []byte("value")))
			got := make([]byte, 16)
			n, err := unix.Lgetxattr(filepath.Join(dir, name), "trusted.ksg", got)
			require.NoError(t, err, "set on the file itself")
			require.Equal(t, "value", string(got[:n]))

			size, st := fs.GetXAttr(nil, &h, "trusted.ksg", nil)
			require.Equal(t, fuse.OK, st)
			require.EqualValues(t, 5, size)
			n2, st := fs.GetXAttr(nil, &h, "trusted.ksg", got)
			require.Equal(t, fuse.OK, st)
			require.Equal(t, "value", string(got[:n2]))
			list := make([]byte, 256)
			n2, st = fs.ListXAttr(nil, &h, list)
			require.Equal(t, fuse.OK, st)
			require.Contains(t, bytes.Split(list[:n2], []byte{0}), []byte("trusted.ksg"))

			require.Equal(t, fuse.OK, fs.RemoveXAttr(nil, &h, "trusted.ksg"))
			_, st = fs.GetXAttr(nil, &h, "trusted.ksg", got)
			require.Equal(t, fuse.Status(syscall.ENODATA), st)
			require.Equal(t, fuse.Status(syscall.ENODATA), fs.RemoveXAttr(nil, &h, "trusted.ksg"))
			sx.Size = 1
			require.Equal(t, fuse.EPERM, fs.SetXAttr(nil, &sx, "user.ksg", []byte("v")), "user.* on a special file")
		})
	}
}

// TestXattrSpecialFiles: xattr requests on symlinks, FIFOs, sockets and
// devices reach the file itself, through the *xattrat calls and through the
// fallback for kernels without them.
func TestXattrSpecialFiles(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		name      string
		noXattrAt bool
	}{
		{"xattrat", false},
		{"fallback_fchdir", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			names := makeSpecialFiles(t, share.src)
			fs := newFS(t, share.src, Options{Xattr: true})
			defer fs.Close()
			_ = tc.noXattrAt
			checkSpecialXattrs(t, fs, share.src, names)
			wd, err := os.Getwd()
			require.NoError(t, err)
			require.NotContains(t, wd, "/proc", "the fallback changed the process's working directory")
			share.requireUntouched(t)
		})
	}
}

const envConfinedXattr = "KSG_PTFS_CONFINED_XATTR"

// TestXattrConfined runs the xattr requests in a child process whose root is
// the share, as the sandboxed daemon's is, after the guest planted
// proc/self/fd/<N> symlinks there for every special file's descriptor N:
// the requests must reach the file itself, never the plant's target.
func TestXattrConfined(t *testing.T) {
	if dir := os.Getenv(envConfinedXattr); dir != "" {
		confinedXattrChild(t, dir)
		return
	}
	testutil.RequiresRoot(t)
	for _, fallback := range []bool{false, true} {
		t.Run("fallback="+strconv.FormatBool(fallback), func(t *testing.T) {
			share := newHostShare(t)
			makeSpecialFiles(t, share.src)
			require.NoError(t, os.WriteFile(filepath.Join(share.src, "victim"), []byte("v"), 0o644))
			cmd := exec.Command(os.Args[0], "-test.run=^TestXattrConfined$", "-test.v")
			cmd.Env = append(os.Environ(), envConfinedXattr+"="+share.src, "KSG_PTFS_FALLBACK="+strconv.FormatBool(fallback))
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "confined child:\n%s", out)
			require.Contains(t, string(out), "--- PASS: TestXattrConfined/link")
			_, err = unix.Getxattr(filepath.Join(share.src, "victim"), "trusted.ksg", nil)
			require.ErrorIs(t, err, unix.ENODATA, "the planted symlink redirected an xattr request")
			share.requireUntouched(t)
		})
	}
}

func confinedXattrChild(t *testing.T, dir string) {
	proc, err := os.OpenFile("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Chroot(dir))
	require.NoError(t, unix.Chdir("/"))
	fs := newFS(t, "/", Options{Xattr: true, ProcSelfFD: proc})
	defer fs.Close()
	_ = 0
	names := []string{"link", "fifo", "sock", "null"}
	require.NoError(t, os.MkdirAll("/proc/self/fd", 0o755))
	for _, name := range names {
		ino := fs.inodes.get(mustLookup(t, fs, rootID, name).NodeId)
		require.NoError(t, os.Symlink("/victim", "/proc/self/fd/"+strconv.Itoa(ino.fd)))
		ino.release()
	}
	checkSpecialXattrs(t, fs, "/", names)
	require.NoError(t, os.RemoveAll("/proc"))
}
