package passthroughfs

import (
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The helpers here take NUL-terminated names as *byte and return a bare
// errno, so that the request paths do not allocate for every name.

// nameMax is NAME_MAX: the longest single path component Linux accepts.
const nameMax = 255

// cname holds one NUL-terminated path component on the caller's stack.
type cname [nameMax + 1]byte

// set copies s (already validated) and returns the C string.
func (c *cname) set(s string) *byte {
	n := copy(c[:nameMax], s)
	c[n] = 0
	return &c[0]
}

// fdName holds the decimal name of a descriptor, for /proc/self/fd/N.
type fdName [24]byte

func (b *fdName) set(fd int) *byte {
	i := len(b) - 1
	b[i] = 0
	u := uint64(fd)
	for {
		i--
		b[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	return &b[i]
}

func openat(dirfd int, name *byte, flags int, mode uint32) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(flags|unix.O_CLOEXEC), uintptr(mode), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// openBeneath opens name relative to dirfd without following any symlink and
// without leaving dirfd (RESOLVE_IN_ROOT: ".." at dirfd stays at dirfd), as
// virtiofsd's openat2 does.
func openBeneath(dirfd int, name *byte, flags int, mode uint32) (int, syscall.Errno) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode & 0o7777),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	r, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_MNT_ID

// fstatx stats an O_PATH (or any) descriptor.
func fstatx(fd int, st *unix.Statx_t) syscall.Errno {
	var empty byte
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(fd), uintptr(unsafe.Pointer(&empty)),
		uintptr(unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT),
		uintptr(statxMask), uintptr(unsafe.Pointer(st)), 0)
	return e
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// iovMax is how many segments the stack-held iovec arrays take; longer
// vectors are served in several calls.
const iovMax = 32

// iovCursor walks a scatter list without copying it or its header: the
// bytes of bufs[0] already moved are skipped when the next iovecs are
// filled, so a call that ends inside a segment costs no allocation.
type iovCursor struct {
	bufs [][]byte
	skip int // bytes of bufs[0] already moved
}

// fill points vecs at the next bytes, at most iovMax segments and, if limit
// is positive, at most limit bytes (the last segment cut short). It returns
// the number of iovecs and of bytes; 0 iovecs: nothing is left.
func (c *iovCursor) fill(vecs *[iovMax]unix.Iovec, limit int) (int, int) {
	n, total, skip := 0, 0, c.skip
	for _, b := range c.bufs {
		if n == iovMax || (limit > 0 && total == limit) {
			break
		}
		b, skip = b[skip:], 0
		if len(b) == 0 {
			continue
		}
		if limit > 0 && len(b) > limit-total {
			b = b[:limit-total]
		}
		vecs[n].Base = &b[0]
		vecs[n].SetLen(len(b))
		n++
		total += len(b)
	}
	return n, total
}

// advance drops the first n bytes.
func (c *iovCursor) advance(n int) {
	for len(c.bufs) > 0 && n > 0 {
		left := len(c.bufs[0]) - c.skip
		if n < left {
			c.skip += n
			return
		}
		n -= left
		c.bufs, c.skip = c.bufs[1:], 0
	}
}

// preadFull reads into bufs at off until they are full or EOF, in calls of
// at most limit bytes if limit is positive (see transfer).
func preadFull(fd int, bufs [][]byte, off int64, limit int) (int, syscall.Errno) {
	return transfer(unix.SYS_PREADV, fd, bufs, off, 0, limit)
}

// pwriteFull writes bufs at off (or appends, with RWF_APPEND in flags), in
// calls of at most limit bytes if limit is positive (see transfer). An
// append is never cut, so that its bytes land at the end together.
func pwriteFull(fd int, bufs [][]byte, off int64, flags, limit int) (int, syscall.Errno) {
	if flags&unix.RWF_APPEND != 0 {
		limit = 0
	}
	return transfer(unix.SYS_PWRITEV2, fd, bufs, off, flags, limit)
}

// transfer moves bufs at off with sysno (preadv, or pwritev2 with flags) in
// calls of at most limit bytes if limit is positive. A short call (EOF, a
// full disk) ends it; an error after some bytes returns the bytes.
func transfer(sysno uintptr, fd int, bufs [][]byte, off int64, flags, limit int) (int, syscall.Errno) {
	c := iovCursor{bufs: bufs}
	done := 0
	for {
		var vecs [iovMax]unix.Iovec
		cnt, want := c.fill(&vecs, limit)
		if cnt == 0 {
			break
		}
		r, _, e := unix.Syscall6(sysno, uintptr(fd), uintptr(unsafe.Pointer(&vecs[0])), uintptr(cnt),
			uintptr(off), uintptr(uint64(off)>>32>>32), uintptr(flags))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			if done > 0 {
				return done, 0
			}
			return 0, e
		}
		n := int(r)
		done += n
		off += int64(n)
		if n < want {
			break
		}
		c.advance(n)
	}
	return done, 0
}

// ptr is the byte slice's first element, nil for an empty one (size queries).
func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func fgetxattr(fd int, name *byte, dest []byte) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_FGETXATTR, uintptr(fd), uintptr(unsafe.Pointer(name)), uintptr(ptr(dest)), uintptr(len(dest)), 0, 0)
	return int(r), e
}

func flistxattr(fd int, dest []byte) (int, syscall.Errno) {
	r, _, e := unix.Syscall(unix.SYS_FLISTXATTR, uintptr(fd), uintptr(ptr(dest)), uintptr(len(dest)))
	return int(r), e
}

func fsetxattr(fd int, name *byte, data []byte, flags int) syscall.Errno {
	_, _, e := unix.Syscall6(unix.SYS_FSETXATTR, uintptr(fd), uintptr(unsafe.Pointer(name)), uintptr(ptr(data)), uintptr(len(data)), uintptr(flags), 0)
	return e
}

func fremovexattr(fd int, name *byte) syscall.Errno {
	_, _, e := unix.Syscall(unix.SYS_FREMOVEXATTR, uintptr(fd), uintptr(unsafe.Pointer(name)), 0)
	return e
}

// xattrArgs is the kernel's struct xattr_args of the *xattrat calls.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func newXattrArgs(b []byte, flags int) xattrArgs {
	return xattrArgs{value: uint64(uintptr(ptr(b))), size: uint32(len(b)), flags: uint32(flags)}
}

// The *xattrat calls (Linux 6.13) with at_flags 0: a magic link in path is
// followed to the inode it stands for.

func getxattrat(dirfd int, path, name *byte, dest []byte) (int, syscall.Errno) {
	a := newXattrArgs(dest, 0)
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), 0,
		uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&a)), unsafe.Sizeof(a))
	runtime.KeepAlive(dest)
	return int(r), e
}

func listxattrat(dirfd int, path *byte, dest []byte) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), 0,
		uintptr(ptr(dest)), uintptr(len(dest)), 0)
	return int(r), e
}

func setxattrat(dirfd int, path, name *byte, data []byte, flags int) syscall.Errno {
	a := newXattrArgs(data, flags)
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), 0,
		uintptr(unsafe.Pointer(name)), uintptr(unsafe.Pointer(&a)), unsafe.Sizeof(a))
	runtime.KeepAlive(data)
	return e
}

func removexattrat(dirfd int, path, name *byte) syscall.Errno {
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), 0,
		uintptr(unsafe.Pointer(name)), 0, 0)
	return e
}

// The path calls, for inDir on kernels without the *xattrat calls.

func getxattr(path, name *byte, dest []byte) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_GETXATTR, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(name)), uintptr(ptr(dest)), uintptr(len(dest)), 0, 0)
	return int(r), e
}

func listxattr(path *byte, dest []byte) (int, syscall.Errno) {
	r, _, e := unix.Syscall(unix.SYS_LISTXATTR, uintptr(unsafe.Pointer(path)), uintptr(ptr(dest)), uintptr(len(dest)))
	return int(r), e
}

func setxattr(path, name *byte, data []byte, flags int) syscall.Errno {
	_, _, e := unix.Syscall6(unix.SYS_SETXATTR, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(name)), uintptr(ptr(data)), uintptr(len(data)), uintptr(flags), 0)
	return e
}

func removexattr(path, name *byte) syscall.Errno {
	_, _, e := unix.Syscall(unix.SYS_REMOVEXATTR, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(name)), 0)
	return e
}

// inDir runs f with dirfd as its working directory, on an OS thread of its
// own: the thread unshares its file-system context (CLONE_FS) so that the
// chdir reaches no other thread, and is never handed back to the Go
// scheduler, so it ends with f (a locked goroutine's thread exits with it).
func inDir(dirfd int, f func() syscall.Errno) syscall.Errno {
	done := make(chan syscall.Errno, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread's cwd and root are its own now.
		if _, _, e := unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_FS, 0, 0); e != 0 {
			done <- e
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_FCHDIR, uintptr(dirfd), 0, 0); e != 0 {
			done <- e
			return
		}
		done <- f()
	}()
	return <-done
}
