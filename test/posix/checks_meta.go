package posix

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func checkPermissions(t *testing.T, dir string, _ Options) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	f := filepath.Join(dir, "f")
	fd, err := unix.Open(f, unix.O_CREAT|unix.O_WRONLY, 0o741)
	require.NoError(t, err)
	unix.Close(fd)
	require.EqualValues(t, 0o741, lstat(t, f).Mode&0o7777, "create mode")
	d := filepath.Join(dir, "d")
	require.NoError(t, unix.Mkdir(d, 0o1777))
	require.EqualValues(t, 0o1777, lstat(t, d).Mode&0o7777, "mkdir mode with sticky bit")

	for _, m := range []uint32{0, 0o600, 0o644, 0o755, 0o4755, 0o2755, 0o7777} {
		require.NoError(t, unix.Chmod(f, m))
		require.EqualValues(t, m, lstat(t, f).Mode&0o7777, "chmod %o", m)
	}
	fh, err := os.OpenFile(filepath.Join(dir, "g"), os.O_CREATE|os.O_RDWR, 0o600)
	require.NoError(t, err)
	defer fh.Close()
	require.NoError(t, fh.Chmod(0o640))
	require.EqualValues(t, 0o640, lstat(t, filepath.Join(dir, "g")).Mode&0o7777, "fchmod")

	// The client's umask applies.
	unix.Umask(0o027)
	fd, err = unix.Open(filepath.Join(dir, "masked"), unix.O_CREAT|unix.O_WRONLY, 0o777)
	require.NoError(t, err)
	unix.Close(fd)
	require.EqualValues(t, 0o750, lstat(t, filepath.Join(dir, "masked")).Mode&0o7777, "umask 027")

	// access(2) as root: X needs an execute bit somewhere.
	require.NoError(t, unix.Chmod(f, 0o644))
	require.NoError(t, unix.Access(f, unix.R_OK|unix.W_OK))
	if os.Geteuid() == 0 {
		requireErrno(t, unix.Access(f, unix.X_OK), unix.EACCES)
		require.NoError(t, unix.Chmod(f, 0o744))
		require.NoError(t, unix.Access(f, unix.X_OK))
	}
}

func checkOwnership(t *testing.T, dir string, _ Options) {
	requireRoot(t)
	f := filepath.Join(dir, "f")
	writeFile(t, f, nil, 0o644)
	require.NoError(t, os.Chown(f, 1234, 5678))
	st := lstat(t, f)
	require.EqualValues(t, 1234, st.Uid)
	require.EqualValues(t, 5678, st.Gid)
	require.NoError(t, os.Chown(f, -1, 42))
	st = lstat(t, f)
	require.EqualValues(t, 1234, st.Uid, "uid -1 leaves it")
	require.EqualValues(t, 42, st.Gid)

	// lchown changes the link, not its target.
	l := filepath.Join(dir, "l")
	require.NoError(t, os.Symlink("f", l))
	require.NoError(t, os.Lchown(l, 777, 888))
	require.EqualValues(t, 777, lstat(t, l).Uid)
	require.EqualValues(t, 1234, lstat(t, f).Uid)

	// chown clears set-user-ID on a regular file.
	require.NoError(t, unix.Chmod(f, 0o4755))
	require.EqualValues(t, unix.S_ISUID, lstat(t, f).Mode&unix.S_ISUID)
	require.NoError(t, os.Chown(f, 1000, 1000))
	require.EqualValues(t, 0, lstat(t, f).Mode&unix.S_ISUID)
}

func checkOtherUser(t *testing.T, dir string, _ Options) {
	requireRoot(t)
	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o777))
	require.NoError(t, os.Chmod(open, 0o777))
	closed := filepath.Join(dir, "closed")
	require.NoError(t, os.Mkdir(closed, 0o755))

	// Files are created as the caller.
	require.Equal(t, "OK", asUser(t, 4321, 8765, "create", filepath.Join(open, "theirs")))
	st := lstat(t, filepath.Join(open, "theirs"))
	require.EqualValues(t, 4321, st.Uid)
	require.EqualValues(t, 8765, st.Gid)
	require.Equal(t, "OK", asUser(t, 4321, 8765, "mkdir", filepath.Join(open, "theirdir")))
	require.EqualValues(t, 4321, lstat(t, filepath.Join(open, "theirdir")).Uid)

	// And permission checks apply to the caller.
	require.Equal(t, "EACCES", asUser(t, 4321, 8765, "create", filepath.Join(closed, "nope")))
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, []byte("root only"), 0o600)
	require.NoError(t, os.Chmod(secret, 0o600))
	require.Equal(t, "EACCES", asUser(t, 4321, 8765, "read", secret))
	require.Equal(t, "EACCES", asUser(t, 4321, 8765, "write", secret))
	require.NoError(t, os.Chmod(secret, 0o604))
	require.Equal(t, "OK", asUser(t, 4321, 8765, "read", secret))

	// Sticky directories protect other users' files.
	sticky := filepath.Join(dir, "sticky")
	require.NoError(t, os.Mkdir(sticky, 0o777))
	require.NoError(t, unix.Chmod(sticky, 0o1777))
	writeFile(t, filepath.Join(sticky, "roots"), nil, 0o666)
	require.Equal(t, "EPERM", asUser(t, 4321, 8765, "unlink", filepath.Join(sticky, "roots")))
}

func checkTimes(t *testing.T, dir string, _ Options) {
	f := filepath.Join(dir, "f")
	writeFile(t, f, nil, 0o644)
	ts := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 123_456_789}, {Sec: 1_500_000_000, Nsec: 987_654_321}}
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, f, ts, 0))
	st := lstat(t, f)
	require.Equal(t, ts[0], st.Atim)
	require.Equal(t, ts[1], st.Mtim)

	// UTIME_OMIT keeps, UTIME_NOW sets.
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, f, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0))
	st2 := lstat(t, f)
	require.Equal(t, ts[0], st2.Atim)
	require.Greater(t, st2.Mtim.Sec, ts[1].Sec)

	// Writing moves mtime; a symlink's own times can be set.
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, f, ts, 0))
	writeFile(t, f, []byte("x"), 0o644)
	require.NotEqual(t, ts[1], lstat(t, f).Mtim)
	l := filepath.Join(dir, "l")
	require.NoError(t, os.Symlink("f", l))
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, l, ts, unix.AT_SYMLINK_NOFOLLOW))
	require.Equal(t, ts[1], lstat(t, l).Mtim)
}

func checkXattr(t *testing.T, dir string, o Options) {
	f := filepath.Join(dir, "f")
	writeFile(t, f, nil, 0o644)
	err := unix.Setxattr(f, "user.ksg", []byte("value"), 0)
	if !o.Xattr {
		requireErrno(t, err, unix.EOPNOTSUPP)
		_, err = unix.Getxattr(f, "user.ksg", nil)
		requireErrno(t, err, unix.EOPNOTSUPP)
		return
	}
	require.NoError(t, err)
	buf := make([]byte, 64)
	n, err := unix.Getxattr(f, "user.ksg", buf)
	require.NoError(t, err)
	require.Equal(t, "value", string(buf[:n]))
	n, err = unix.Getxattr(f, "user.ksg", nil)
	require.NoError(t, err)
	require.Equal(t, 5, n, "size query")
	_, err = unix.Getxattr(f, "user.ksg", make([]byte, 2))
	requireErrno(t, err, unix.ERANGE)
	requireErrno(t, unix.Setxattr(f, "user.ksg", []byte("v2"), unix.XATTR_CREATE), unix.EEXIST)
	requireErrno(t, unix.Setxattr(f, "user.other", []byte("v2"), unix.XATTR_REPLACE), unix.ENODATA)
	require.NoError(t, unix.Setxattr(f, "user.empty", nil, 0))
	n, err = unix.Listxattr(f, buf)
	require.NoError(t, err)
	names := splitNames(buf[:n])
	require.Contains(t, names, "user.ksg")
	require.Contains(t, names, "user.empty")
	require.NoError(t, unix.Removexattr(f, "user.ksg"))
	_, err = unix.Getxattr(f, "user.ksg", buf)
	requireErrno(t, err, unix.ENODATA)
	requireErrno(t, unix.Removexattr(f, "user.ksg"), unix.ENODATA)

	// Directories carry them too; a big value round-trips.
	big := repeatByte('v', 4000)
	require.NoError(t, unix.Setxattr(dir, "user.big", big, 0))
	got := make([]byte, 8192)
	n, err = unix.Getxattr(dir, "user.big", got)
	require.NoError(t, err)
	require.Equal(t, big, got[:n])
}

func splitNames(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	return out
}

func checkPosixLocks(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "lockfile")
	writeFile(t, p, make([]byte, 100), 0o666)
	require.NoError(t, os.Chmod(p, 0o666))
	a, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer b.Close()

	// Open file description locks conflict between descriptions.
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 50}
	require.NoError(t, unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &lk))
	try := unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 10}
	requireErrno(t, unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &try), unix.EAGAIN, unix.EACCES)
	q := unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 10}
	require.NoError(t, unix.FcntlFlock(b.Fd(), unix.F_OFD_GETLK, &q))
	require.EqualValues(t, unix.F_WRLCK, q.Type, "F_OFD_GETLK reports the holder")
	require.EqualValues(t, 0, q.Start)
	require.EqualValues(t, 50, q.Len)
	other := unix.Flock_t{Type: unix.F_WRLCK, Start: 50, Len: 50}
	require.NoError(t, unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &other), "disjoint range")
	unlock := unix.Flock_t{Type: unix.F_UNLCK, Start: 0, Len: 50}
	require.NoError(t, unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &unlock))
	require.NoError(t, unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &try))

	// Closing a description drops its locks.
	require.NoError(t, b.Close())
	require.NoError(t, unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &try))
	require.NoError(t, unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &unlock))

	// Classic process-owned locks conflict with another process.
	if os.Geteuid() == 0 {
		c, err := os.OpenFile(p, os.O_RDWR, 0)
		require.NoError(t, err)
		defer c.Close()
		all := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
		require.NoError(t, unix.FcntlFlock(c.Fd(), unix.F_SETLK, &all))
		require.Contains(t, []string{"EAGAIN", "EACCES"}, asSelf(t, "lock", p))
		all.Type = unix.F_UNLCK
		require.NoError(t, unix.FcntlFlock(c.Fd(), unix.F_SETLK, &all))
		require.Equal(t, "OK", asSelf(t, "lock", p))
	}
}

func checkFlock(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "flockfile")
	writeFile(t, p, nil, 0o666)
	a, err := os.Open(p)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.Open(p)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	requireErrno(t, unix.Flock(int(b.Fd()), unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
	if os.Geteuid() == 0 {
		require.Equal(t, "EAGAIN", asSelf(t, "flock", p), "EWOULDBLOCK is EAGAIN")
	}
	require.NoError(t, unix.Flock(int(a.Fd()), unix.LOCK_UN))
	require.NoError(t, unix.Flock(int(b.Fd()), unix.LOCK_SH|unix.LOCK_NB))
	require.NoError(t, unix.Flock(int(a.Fd()), unix.LOCK_SH|unix.LOCK_NB), "shared locks coexist")
}
