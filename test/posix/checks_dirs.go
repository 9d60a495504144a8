package posix

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func checkRename(t *testing.T, dir string, _ Options) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("A"), 0o644)
	ino := lstat(t, a).Ino
	require.NoError(t, os.Rename(a, b))
	_, err := os.Lstat(a)
	requireErrno(t, err, unix.ENOENT)
	require.Equal(t, ino, lstat(t, b).Ino, "rename keeps the inode")

	// Over an existing file.
	writeFile(t, a, []byte("new"), 0o644)
	require.NoError(t, os.Rename(a, b))
	require.Equal(t, "new", string(readFile(t, b)))

	// Directories, into another directory, and over an empty one.
	d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
	require.NoError(t, os.Mkdir(d1, 0o755))
	require.NoError(t, os.Mkdir(d2, 0o755))
	writeFile(t, filepath.Join(d1, "inner"), []byte("x"), 0o644)
	require.NoError(t, os.Rename(b, filepath.Join(d1, "moved")))
	require.Equal(t, "new", string(readFile(t, filepath.Join(d1, "moved"))))
	// (unix.Rename: os.Rename refuses to replace a directory.)
	require.NoError(t, unix.Rename(d1, d2))
	require.Equal(t, "x", string(readFile(t, filepath.Join(d2, "inner"))))

	// Failures.
	d3 := filepath.Join(dir, "d3")
	require.NoError(t, os.Mkdir(d3, 0o755))
	requireErrno(t, unix.Rename(d3, d2), unix.ENOTEMPTY, unix.EEXIST)
	requireErrno(t, unix.Rename(d2, filepath.Join(d2, "sub")), unix.EINVAL)
	requireErrno(t, unix.Rename(filepath.Join(d2, "inner"), d3), unix.EISDIR)
	requireErrno(t, unix.Rename(d3, filepath.Join(d2, "inner")), unix.ENOTDIR)
	requireErrno(t, unix.Rename(filepath.Join(dir, "none"), filepath.Join(dir, "x")), unix.ENOENT)
}

func checkRenameNoReplace(t *testing.T, dir string, _ Options) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("A"), 0o644)
	writeFile(t, b, []byte("B"), 0o644)
	requireErrno(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE), unix.EEXIST)
	require.Equal(t, "B", string(readFile(t, b)))
	c := filepath.Join(dir, "c")
	require.NoError(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE))
	require.Equal(t, "A", string(readFile(t, c)))
	requireErrno(t, unix.Renameat2(unix.AT_FDCWD, c, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE), unix.EINVAL)
}

func checkRenameExchange(t *testing.T, dir string, _ Options) {
	f, d := filepath.Join(dir, "file"), filepath.Join(dir, "dir")
	writeFile(t, f, []byte("F"), 0o644)
	require.NoError(t, os.Mkdir(d, 0o755))
	writeFile(t, filepath.Join(d, "in"), []byte("I"), 0o644)
	fi, di := lstat(t, f).Ino, lstat(t, d).Ino
	require.NoError(t, unix.Renameat2(unix.AT_FDCWD, f, unix.AT_FDCWD, d, unix.RENAME_EXCHANGE))
	require.Equal(t, di, lstat(t, f).Ino)
	require.Equal(t, fi, lstat(t, d).Ino)
	require.Equal(t, "F", string(readFile(t, d)))
	require.Equal(t, "I", string(readFile(t, filepath.Join(f, "in"))))
	requireErrno(t, unix.Renameat2(unix.AT_FDCWD, f, unix.AT_FDCWD, filepath.Join(dir, "none"), unix.RENAME_EXCHANGE), unix.ENOENT)
}

func checkLink(t *testing.T, dir string, _ Options) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("shared"), 0o644)
	require.NoError(t, os.Link(a, b))
	sa, sb := lstat(t, a), lstat(t, b)
	require.Equal(t, sa.Ino, sb.Ino)
	require.EqualValues(t, 2, sb.Nlink)
	writeFile(t, b, []byte("changed"), 0o644)
	require.Equal(t, "changed", string(readFile(t, a)))
	require.NoError(t, os.Remove(a))
	require.EqualValues(t, 1, lstat(t, b).Nlink)
	require.Equal(t, "changed", string(readFile(t, b)))

	requireErrno(t, os.Link(b, b), unix.EEXIST)
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	requireErrno(t, os.Link(sub, filepath.Join(dir, "dirlink")), unix.EPERM)
}

func checkSymlink(t *testing.T, dir string, _ Options) {
	target := filepath.Join(dir, "target")
	writeFile(t, target, []byte("pointed at"), 0o644)
	l := filepath.Join(dir, "l")
	require.NoError(t, os.Symlink("target", l))
	got, err := os.Readlink(l)
	require.NoError(t, err)
	require.Equal(t, "target", got)
	require.Equal(t, uint32(unix.S_IFLNK), lstat(t, l).Mode&unix.S_IFMT)
	require.Equal(t, "pointed at", string(readFile(t, l)))
	_, err = unix.Open(l, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	requireErrno(t, err, unix.ELOOP)

	// Dangling, long and odd targets are stored verbatim.
	for i, tgt := range []string{"nowhere", "../../../../etc/passwd", "/", string(make([]byte, 0)) + "a b\tc", longName(1000)} {
		p := filepath.Join(dir, fmt.Sprintf("odd%d", i))
		require.NoError(t, os.Symlink(tgt, p))
		got, err := os.Readlink(p)
		require.NoError(t, err)
		require.Equal(t, tgt, got)
	}
	_, err = os.Stat(filepath.Join(dir, "odd0"))
	requireErrno(t, err, unix.ENOENT)
	requireErrno(t, os.Symlink("x", l), unix.EEXIST)

	// A symlink to a directory is followed by the client.
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	writeFile(t, filepath.Join(sub, "in"), []byte("via link"), 0o644)
	require.NoError(t, os.Symlink("sub", filepath.Join(dir, "subl")))
	require.Equal(t, "via link", string(readFile(t, filepath.Join(dir, "subl", "in"))))
}

func longName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
		if i%50 == 49 {
			b[i] = '/'
		}
	}
	return string(b)
}

func checkMkdirRmdir(t *testing.T, dir string, _ Options) {
	d := filepath.Join(dir, "d")
	require.NoError(t, os.Mkdir(d, 0o755))
	requireErrno(t, os.Mkdir(d, 0o755), unix.EEXIST)
	writeFile(t, filepath.Join(d, "f"), nil, 0o644)
	requireErrno(t, unix.Rmdir(d), unix.ENOTEMPTY, unix.EEXIST)
	requireErrno(t, unix.Rmdir(filepath.Join(d, "f")), unix.ENOTDIR)
	requireErrno(t, unix.Unlink(d), unix.EISDIR)
	require.NoError(t, os.Remove(filepath.Join(d, "f")))
	require.NoError(t, unix.Rmdir(d))
	_, err := os.Stat(d)
	requireErrno(t, err, unix.ENOENT)

	// Deep trees and the maximal name length.
	p := dir
	for i := 0; i < 20; i++ {
		p = filepath.Join(p, fmt.Sprintf("level%02d", i))
		require.NoError(t, os.Mkdir(p, 0o755))
	}
	writeFile(t, filepath.Join(p, "leaf"), []byte("deep"), 0o644)
	require.Equal(t, "deep", string(readFile(t, filepath.Join(p, "leaf"))))
	name255 := string(repeatByte('n', 255))
	writeFile(t, filepath.Join(dir, name255), nil, 0o644)
	err = os.WriteFile(filepath.Join(dir, name255+"n"), nil, 0o644)
	requireErrno(t, err, unix.ENAMETOOLONG)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "level00")))
}

func repeatByte(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func checkReaddir10k(t *testing.T, dir string, _ Options) {
	const n = 10000
	want := make([]string, 0, n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("entry-%05d", i)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		want = append(want, name)
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "zz-subdir"), 0o755))
	want = append(want, "zz-subdir")

	d, err := os.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	var got []string
	dirs := 0
	for {
		ents, err := d.ReadDir(257)
		for _, e := range ents {
			got = append(got, e.Name())
			if e.IsDir() {
				dirs++
			}
		}
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	sort.Strings(got)
	requireSameNames(t, want, got)
	require.Equal(t, 1, dirs, "entry types")

	// The raw stream carries "." and ".." too.
	raw := rawNames(t, dir)
	sort.Strings(raw)
	requireSameNames(t, append([]string{".", ".."}, want...), raw)

	// ls -l: every entry stat'ed after listing.
	for _, name := range got[:500] {
		st := lstat(t, filepath.Join(dir, name))
		require.NotZero(t, st.Ino)
	}
}

// requireSameNames compares sorted name lists without printing 10k names.
func requireSameNames(t *testing.T, want, got []string) {
	t.Helper()
	for i := 0; i < len(want) && i < len(got); i++ {
		if want[i] != got[i] {
			require.Failf(t, "directory listing differs", "first difference at %d: want %q, got %q", i, want[i], got[i])
		}
	}
	require.Equal(t, len(want), len(got), "number of entries")
}

// rawNames lists dir with getdents64, dot entries included.
func rawNames(t *testing.T, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 16<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		require.NoError(t, err)
		if n == 0 {
			return names
		}
		names = append(names, direntNames(buf[:n])...)
	}
}

// direntNames parses linux_dirent64 records (unix.ParseDirent would drop
// "." and "..").
func direntNames(b []byte) []string {
	var names []string
	for len(b) >= 19 {
		reclen := int(b[16]) | int(b[17])<<8
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		names = append(names, string(name))
		b = b[reclen:]
	}
	return names
}

func checkReaddirSeek(t *testing.T, dir string, _ Options) {
	for i := 0; i < 300; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("e%03d", i)), nil, 0o644)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 2048) // a few entries per call
	n, err := unix.Getdents(fd, buf)
	require.NoError(t, err)
	require.NotZero(t, n)
	first, err := unix.Seek(fd, 0, unix.SEEK_CUR)
	require.NoError(t, err)
	var rest1 []string
	for {
		n, err := unix.Getdents(fd, buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		rest1 = append(rest1, direntNames(buf[:n])...)
	}
	// Seeking back to a telldir position replays the same entries.
	_, err = unix.Seek(fd, first, unix.SEEK_SET)
	require.NoError(t, err)
	var rest2 []string
	for {
		n, err := unix.Getdents(fd, buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		rest2 = append(rest2, direntNames(buf[:n])...)
	}
	require.Equal(t, rest1, rest2)
	// Rewinding replays everything.
	_, err = unix.Seek(fd, 0, unix.SEEK_SET)
	require.NoError(t, err)
	var all []string
	for {
		n, err := unix.Getdents(fd, buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		all = append(all, direntNames(buf[:n])...)
	}
	require.Len(t, all, 302)
}

func checkSpecialFiles(t *testing.T, dir string, _ Options) {
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o644))
	require.Equal(t, uint32(unix.S_IFIFO), lstat(t, fifo).Mode&unix.S_IFMT)
	// The FIFO is the client's own: a reader and a writer meet in it.
	fd, err := unix.Open(fifo, unix.O_RDWR|unix.O_NONBLOCK, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("through the pipe"))
	require.NoError(t, err)
	buf := make([]byte, 32)
	n, err := unix.Read(fd, buf)
	require.NoError(t, err)
	require.Equal(t, "through the pipe", string(buf[:n]))

	sock := filepath.Join(dir, "sock")
	require.NoError(t, unix.Mknod(sock, unix.S_IFSOCK|0o644, 0))
	require.Equal(t, uint32(unix.S_IFSOCK), lstat(t, sock).Mode&unix.S_IFMT)

	if os.Geteuid() == 0 {
		null := filepath.Join(dir, "null")
		require.NoError(t, unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		st := lstat(t, null)
		require.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT)
		require.EqualValues(t, 1, unix.Major(st.Rdev))
		require.EqualValues(t, 3, unix.Minor(st.Rdev))
		// Reopened from the wide major/minor range too.
		wide := filepath.Join(dir, "wide")
		require.NoError(t, unix.Mknod(wide, unix.S_IFBLK|0o600, int(unix.Mkdev(259, 70000))))
		st = lstat(t, wide)
		require.EqualValues(t, 259, unix.Major(st.Rdev))
		require.EqualValues(t, 70000, unix.Minor(st.Rdev))
	}
}
