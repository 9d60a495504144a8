package posix

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func checkCreateReadWrite(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "f")
	writeFile(t, p, []byte("hello, world"), 0o644)
	require.Equal(t, []byte("hello, world"), readFile(t, p))

	_, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	requireErrno(t, err, unix.EEXIST)

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte("WORLD"), 7)
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Equal(t, "hello", string(buf))
	n, err := f.ReadAt(make([]byte, 100), 7)
	require.Equal(t, io.EOF, err)
	require.Equal(t, 5, n)
	require.Equal(t, "hello, WORLD", string(readFile(t, p)))

	// A write past the end leaves zeros behind.
	_, err = f.WriteAt([]byte("!"), 20)
	require.NoError(t, err)
	got := readFile(t, p)
	require.Len(t, got, 21)
	require.Equal(t, make([]byte, 8), got[12:20])

	_, err = os.Open(filepath.Join(dir, "missing"))
	requireErrno(t, err, unix.ENOENT)
	_, err = os.ReadFile(filepath.Join(p, "below-a-file"))
	requireErrno(t, err, unix.ENOTDIR)
}

func checkAppend(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "log")
	writeFile(t, p, []byte("0123"), 0o644)
	a, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	defer b.Close()
	for i := 0; i < 50; i++ {
		_, err = a.Write([]byte("a"))
		require.NoError(t, err)
		_, err = b.Write([]byte("b"))
		require.NoError(t, err)
	}
	got := readFile(t, p)
	require.Len(t, got, 104, "appends from two descriptors must not overwrite each other")
	require.Equal(t, "0123", string(got[:4]))
	require.Equal(t, 50, bytes.Count(got, []byte("a")))
	require.Equal(t, 50, bytes.Count(got, []byte("b")))
}

func checkTruncate(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "t")
	writeFile(t, p, []byte("0123456789"), 0o644)
	require.NoError(t, os.Truncate(p, 4))
	require.Equal(t, "0123", string(readFile(t, p)))
	require.NoError(t, os.Truncate(p, 8))
	require.Equal(t, []byte("0123\x00\x00\x00\x00"), readFile(t, p))

	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(2))
	st, err := f.Stat()
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Size())
	require.NoError(t, f.Close())

	f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Empty(t, readFile(t, p))

	requireErrno(t, os.Truncate(dir, 0), unix.EISDIR)
	requireErrno(t, os.Truncate(p, -1), unix.EINVAL)
}

func checkLargeFile(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "big")
	data := make([]byte, 9<<20+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	writeFile(t, p, data, 0o644)
	require.Equal(t, sha256.Sum256(data), sha256.Sum256(readFile(t, p)))

	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	// Unaligned reads across request boundaries.
	for _, off := range []int64{0, 1, 4095, 128<<10 - 1, 1<<20 + 7, int64(len(data)) - 10} {
		buf := make([]byte, 300<<10)
		n, err := f.ReadAt(buf, off)
		if err != io.EOF {
			require.NoError(t, err)
		}
		require.Equal(t, data[off:off+int64(n)], buf[:n], "offset %d", off)
	}
}

func checkUnlinkedOpen(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "u")
	writeFile(t, p, []byte("still here"), 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, os.Remove(p))
	_, err = os.Stat(p)
	requireErrno(t, err, unix.ENOENT)
	buf := make([]byte, 10)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Equal(t, "still here", string(buf))
	_, err = f.WriteAt([]byte("STILL"), 0)
	require.NoError(t, err)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	require.Equal(t, "STILL here", string(buf))
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(f.Fd()), &st))
	require.EqualValues(t, 0, st.Nlink)
}

// checkMmap maps the file in a helper process: a page fault on a FUSE file
// served by the faulting process itself can deadlock with Go's garbage
// collector (the server goroutines stop while the faulting thread cannot),
// and the suite may run inside the process serving dir.
func checkMmap(t *testing.T, dir string, o Options) {
	p := filepath.Join(dir, "m")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(mmapSize))
	_, err = f.WriteAt([]byte("file data"), 0)
	require.NoError(t, err)

	// A private mapping reads the file and does not change it.
	require.Equal(t, "OK", asSelf(t, "mmapprivate", p))
	require.Equal(t, "file data", string(readFile(t, p)[:9]))

	got := asSelf(t, "mmapwrite", p)
	if o.DirectIO && got == "ENODEV" {
		t.Log("shared mmap of a direct-I/O file refused by the client kernel (ENODEV)")
		return
	}
	require.Equal(t, "OK", got)
	// Seen by read(2).
	require.Equal(t, "written through mmap", string(readFile(t, p)[4096:4096+20]))

	// And write(2) is seen by a new mapping.
	_, err = f.WriteAt([]byte("by write"), 2*4096)
	require.NoError(t, err)
	require.Equal(t, "OK:by write", asSelf(t, "mmapread", p))
}

const mmapSize = 3 * 4096

// mmapHelper runs in the helper process for checkMmap.
func mmapHelper(op, path string) string {
	flags, prot, share := os.O_RDWR, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED
	switch op {
	case "mmapread":
		flags, prot = os.O_RDONLY, unix.PROT_READ
	case "mmapprivate":
		share = unix.MAP_PRIVATE
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return unix.ErrnoName(errnoOf(err))
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, mmapSize, prot, share)
	if err != nil {
		return unix.ErrnoName(errnoOf(err))
	}
	defer unix.Munmap(m)
	switch op {
	case "mmapread":
		return "OK:" + string(m[2*4096:2*4096+8])
	case "mmapprivate":
		if string(m[:9]) != "file data" {
			return "BAD:" + string(m[:9])
		}
		copy(m, "private")
		return "OK"
	}
	copy(m[4096:], "written through mmap")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return unix.ErrnoName(errnoOf(err))
	}
	return "OK"
}

func checkSeekHoles(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "sparse")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer f.Close()
	const far = 8 << 20
	_, err = f.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	require.NoError(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{2}, 4096), far)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	fd := int(f.Fd())
	size := int64(far + 4096)

	off, err := unix.Seek(fd, 0, unix.SEEK_DATA)
	require.NoError(t, err)
	require.EqualValues(t, 0, off)
	hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE)
	require.NoError(t, err)
	require.True(t, hole >= 4096 && hole <= size, "first hole at %d", hole)
	if hole < far {
		// The filesystem tracks holes: data resumes at the far block.
		data, err := unix.Seek(fd, hole, unix.SEEK_DATA)
		require.NoError(t, err)
		require.True(t, data > hole && data <= far, "data after hole at %d", data)
	}
	end, err := unix.Seek(fd, far, unix.SEEK_HOLE)
	require.NoError(t, err)
	require.Equal(t, size, end, "the end of file is a hole")
	_, err = unix.Seek(fd, size, unix.SEEK_DATA)
	requireErrno(t, err, unix.ENXIO)
	_, err = unix.Seek(fd, size+1, unix.SEEK_HOLE)
	requireErrno(t, err, unix.ENXIO)
}

func checkFallocate(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "fa")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer f.Close()
	fd := int(f.Fd())
	require.NoError(t, unix.Fallocate(fd, 0, 0, 1<<20))
	st, err := f.Stat()
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, st.Size())

	require.NoError(t, unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 1<<20, 1<<20))
	st, err = f.Stat()
	require.NoError(t, err)
	require.EqualValues(t, 1<<20, st.Size(), "KEEP_SIZE must not grow the file")

	_, err = f.WriteAt(bytes.Repeat([]byte{7}, 8192), 0)
	require.NoError(t, err)
	require.NoError(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096))
	got := make([]byte, 8192)
	_, err = f.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 4096), got[:4096], "punched range reads as zeros")
	require.Equal(t, bytes.Repeat([]byte{7}, 4096), got[4096:])
}

func checkCopyFileRange(t *testing.T, dir string, _ Options) {
	src := filepath.Join(dir, "src")
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	writeFile(t, src, data, 0o644)
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, "dst"), os.O_RDWR|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer out.Close()
	offIn, offOut := int64(16), int64(0)
	total := 0
	for total < len(data)-16 {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(data)-16-total, 0)
		require.NoError(t, err)
		require.NotZero(t, n)
		total += n
	}
	require.Equal(t, data[16:], readFile(t, filepath.Join(dir, "dst")))
}

func checkTmpfile(t *testing.T, dir string, _ Options) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if errnoOf(err) == unix.EOPNOTSUPP {
		t.Skip("O_TMPFILE not supported by the target filesystem")
	}
	require.NoError(t, err)
	defer unix.Close(fd)
	_, err = unix.Pwrite(fd, []byte("anonymous"), 0)
	require.NoError(t, err)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "an O_TMPFILE file has no name")
	p := filepath.Join(dir, "named")
	require.NoError(t, unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+itoa(fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW))
	require.Equal(t, "anonymous", string(readFile(t, p)))
}

func checkFsyncStatfs(t *testing.T, dir string, _ Options) {
	p := filepath.Join(dir, "s")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Write([]byte("durable"))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, unix.Fdatasync(int(f.Fd())))
	d, err := os.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.Sync())
	require.NoError(t, unix.Syncfs(int(f.Fd())))
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &st))
	require.NotZero(t, st.Blocks)
	require.NotZero(t, st.Bsize)
	require.NotZero(t, st.Namelen)
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}
