package posix

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Options describe what the target is expected to support.
type Options struct {
	// Xattr: user.* extended attributes work (virtiofsd --xattr). Without
	// it the suite expects them to be refused with EOPNOTSUPP.
	Xattr bool
	// DirectIO: the target opens files with FOPEN_DIRECT_IO (virtiofsd
	// --cache=never or metadata). Whether a shared writable mmap then works
	// depends on the client kernel (FUSE_DIRECT_IO_ALLOW_MMAP), so the mmap
	// check accepts ENODEV for it.
	DirectIO bool
	// Mounted: dir is the mount point of the share, so its parent belongs
	// to the client, not to the host directory beside the share. The
	// escape checks then also try to leave the mount (and must fail).
	Mounted bool
	// EscapeMarker names a file that exists in the parent of the shared
	// directory on the host (only with Mounted). The escape checks assert
	// that no path from inside the mount reaches it. Empty: a name that
	// exists nowhere is used, and the checks only show that the attempts
	// fail.
	EscapeMarker string
}

// Check is one named behaviour.
type Check struct {
	Name string
	Run  func(t *testing.T, dir string, o Options)
}

// Checks is the suite, in the order All runs it.
func Checks() []Check {
	return []Check{
		{"create_read_write", checkCreateReadWrite},
		{"append", checkAppend},
		{"truncate", checkTruncate},
		{"large_file", checkLargeFile},
		{"unlinked_open_file", checkUnlinkedOpen},
		{"rename", checkRename},
		{"rename_noreplace", checkRenameNoReplace},
		{"rename_exchange", checkRenameExchange},
		{"link", checkLink},
		{"symlink", checkSymlink},
		{"mkdir_rmdir", checkMkdirRmdir},
		{"permissions", checkPermissions},
		{"ownership", checkOwnership},
		{"other_user", checkOtherUser},
		{"times", checkTimes},
		{"special_files", checkSpecialFiles},
		{"xattr", checkXattr},
		{"posix_locks", checkPosixLocks},
		{"flock", checkFlock},
		{"readdir_10k", checkReaddir10k},
		{"readdir_seek", checkReaddirSeek},
		{"mmap", checkMmap},
		{"seek_holes", checkSeekHoles},
		{"fallocate", checkFallocate},
		{"copy_file_range", checkCopyFileRange},
		{"tmpfile", checkTmpfile},
		{"fsync_statfs", checkFsyncStatfs},
		{"escape_dotdot", checkEscapeDotDot},
		{"escape_symlink", checkEscapeSymlink},
		{"escape_rename", checkEscapeRename},
	}
}

// All runs every check in its own new subdirectory of dir, which must exist
// and be writable; the subdirectories are removed afterwards.
func All(t *testing.T, dir string, o Options) {
	t.Helper()
	st, err := os.Stat(dir)
	require.NoError(t, err, "posix suite target")
	require.True(t, st.IsDir(), "posix suite target %s is not a directory", dir)
	for _, c := range Checks() {
		t.Run(c.Name, func(t *testing.T) {
			sub := filepath.Join(dir, "posix-"+c.Name)
			_ = os.RemoveAll(sub)
			require.NoError(t, os.Mkdir(sub, 0o755))
			// Other users must reach the check's directory.
			require.NoError(t, os.Chmod(sub, 0o755))
			t.Cleanup(func() { _ = os.RemoveAll(sub) })
			c.Run(t, sub, o)
		})
	}
}

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// requireErrno asserts that err carries one of want.
func requireErrno(t *testing.T, err error, want ...syscall.Errno) {
	t.Helper()
	require.Error(t, err)
	got := errnoOf(err)
	for _, w := range want {
		if got == w {
			return
		}
	}
	require.Failf(t, "wrong error", "got %v (%v), want one of %v", err, got, want)
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, mode))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func lstat(t *testing.T, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st), "lstat %s", path)
	return &st
}

// The helper process: a check runs this binary again with helperEnv set to
// "uid:gid:op:path"; init performs op as that user and prints the errno name
// ("OK" on success), then exits before any test runs.
const helperEnv = "KSG_POSIX_HELPER"

func init() {
	spec, ok := os.LookupEnv(helperEnv)
	if !ok {
		return
	}
	fmt.Print(runHelper(spec))
	os.Exit(0)
}

func runHelper(spec string) string {
	var uid, gid int
	var op, path string
	parts := strings.SplitN(spec, ":", 4)
	if len(parts) != 4 {
		return "BADSPEC"
	}
	if _, err := fmt.Sscan(parts[0], &uid); err != nil {
		return "BADSPEC"
	}
	if _, err := fmt.Sscan(parts[1], &gid); err != nil {
		return "BADSPEC"
	}
	op, path = parts[2], parts[3]
	if uid != os.Getuid() || gid != os.Getgid() {
		if err := syscall.Setgroups(nil); err != nil {
			return "SETGROUPS:" + err.Error()
		}
		if err := syscall.Setgid(gid); err != nil {
			return "SETGID:" + err.Error()
		}
		if err := syscall.Setuid(uid); err != nil {
			return "SETUID:" + err.Error()
		}
	}
	var err error
	switch op {
	case "create":
		var fd int
		fd, err = unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	case "mkdir":
		err = unix.Mkdir(path, 0o755)
	case "read":
		_, err = os.ReadFile(path)
	case "write":
		var f *os.File
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
	case "unlink":
		err = unix.Unlink(path)
	case "mmapwrite", "mmapread", "mmapprivate":
		return mmapHelper(op, path)
	case "lock", "flock":
		var fd int
		fd, err = unix.Open(path, unix.O_RDWR, 0)
		if err == nil {
			if op == "lock" {
				lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
				err = unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
			} else {
				err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			}
			unix.Close(fd)
		}
	default:
		return "BADOP"
	}
	if err == nil {
		return "OK"
	}
	if e := errnoOf(err); e != 0 {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

// asUser performs op on path as uid:gid in a helper process and returns the
// errno name it saw ("OK" on success). Another user than our own needs root.
func asUser(t *testing.T, uid, gid int, op, path string) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d:%s:%s", helperEnv, uid, gid, op, path))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	require.NoError(t, cmd.Run(), "helper %s %s: %s", op, path, stderr.String())
	return strings.TrimSpace(out.String())
}

// asSelf performs op in a helper process as the current user.
func asSelf(t *testing.T, op, path string) string {
	t.Helper()
	return asUser(t, os.Getuid(), os.Getgid(), op, path)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}
