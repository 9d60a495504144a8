package passthroughfs

import (
	"bytes"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// verify reports whether the share still shows h's directory at h's path.
// For an entry with a file handle it returns the descriptor it opened there
// (the caller closes it); pinned is the inode an entry without one holds.
func (r *recoveryTable) verify(h *heldRoot, pinned *inode) (int, bool) {
	if h.handle == nil && pinned == nil {
		return -1, false
	}
	var cn [unix.PathMax + 1]byte
	if len(h.path) >= len(cn) {
		return -1, false
	}
	copy(cn[:], h.path)
	fd, e := openResolve(r.rootFD, &cn[0], unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW,
		unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
	if e != 0 {
		return -1, false
	}
	var st unix.Statx_t
	if fstatx(fd, &st) != 0 || keyOf(&st) != h.key || st.Nlink == 0 {
		closeFD(fd)
		return -1, false
	}
	if h.handle != nil {
		if !h.handle.equal(handleOf(fd)) {
			closeFD(fd)
			return -1, false
		}
		return fd, true
	}
	// The held descriptor pins the inode, so the key names no other file;
	// the path reaching the key proves it is still in the share.
	closeFD(fd)
	if fstatx(pinned.fd, &st) != 0 || keyOf(&st) != h.key || st.Nlink == 0 {
		return -1, false
	}
	return -1, true
}

// pathOf names the directory open at fd relative to the shared directory,
// as /proc/self/fd shows it; false if it is not inside.
func (r *recoveryTable) pathOf(fd int) (string, bool) {
	p, ok := readFDLink(r.procFD, fd)
	if !ok {
		return "", false
	}
	var rel string
	if r.rootPath == "/" {
		rel = strings.TrimPrefix(p, "/")
	} else if strings.HasPrefix(p, r.rootPath+"/") {
		rel = p[len(r.rootPath)+1:]
	}
	if rel == "" || !strings.HasPrefix(p, "/") {
		return "", false
	}
	// Not a slice of p: the entry keeps only its own bytes.
	return strings.Clone(rel), true
}

// readFDLink reads /proc/self/fd/<fd>.
func readFDLink(procFD, fd int) (string, bool) {
	var n fdName
	buf := make([]byte, unix.PathMax)
	for {
		r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(procFD), uintptr(unsafe.Pointer(n.set(fd))),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || int(r) >= len(buf) {
			return "", false
		}
		return string(buf[:r]), true
	}
}

// openResolve is openat2 with the resolve flags given.
func openResolve(dirfd int, name *byte, flags int, resolve uint64) (int, syscall.Errno) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	r, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

func (h *fileHandle) equal(o *fileHandle) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.mountID == o.mountID && h.fh.Type() == o.fh.Type() && bytes.Equal(h.fh.Bytes(), o.fh.Bytes())
}
