package passthroughfs

import (
	"bytes"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// POSIX ACLs are not negotiated, so like virtiofsd without --posix-acl the
// ACL xattrs are refused and hidden: the guest would misread them.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

func blockedXattr(name string) bool { return name == aclAccess || name == aclDefault }

// xattrTarget is where an xattr call goes: a descriptor of its own for
// regular files and directories; for the others (f*xattr refuses O_PATH
// descriptors, and opening a device or FIFO is not safe) the inode's O_PATH
// descriptor, reached by its name in the held /proc/self/fd directory (see
// procXattr).
type xattrTarget struct {
	fd  int
	own bool
}

func (fs *FS) xattrTarget(ino *inode) (xattrTarget, syscall.Errno) {
	if ino.mode == unix.S_IFREG || ino.mode == unix.S_IFDIR {
		fd, e := fs.reopen(ino, unix.O_RDONLY|unix.O_NONBLOCK)
		if e != 0 {
			return xattrTarget{}, e
		}
		return xattrTarget{fd: fd, own: true}, 0
	}
	return xattrTarget{fd: ino.fd}, 0
}

func (t xattrTarget) close() {
	if t.own {
		closeFD(t.fd)
	}
}

// procXattr runs one xattr call on the /proc/self/fd name of a special
// file's descriptor, resolved from the held /proc/self/fd descriptor and
// never from the process root, which in the sandbox is the guest's share:
// with the *xattrat calls (Linux 6.13) relative to that descriptor, or where
// the kernel lacks them in a thread whose working directory it is (as Rust
// virtiofsd does). The magic link leads to the inode itself, also for a
// symlink, which is not followed further.
func (fs *FS) procXattr(t xattrTarget, at func(dirfd int, name *byte) syscall.Errno, inCwd func(name *byte) syscall.Errno) syscall.Errno {
	var n fdName
	name := n.set(t.fd)
	if !fs.noXattrAt.Load() {
		e := at(fs.procFD, name)
		if e != syscall.ENOSYS {
			return e
		}
		fs.noXattrAt.Store(true)
	}
	return inDir(fs.procFD, func() syscall.Errno { return inCwd(name) })
}

func (fs *FS) xattrInode(nodeid uint64) (*inode, xattrTarget, syscall.Errno) {
	if !fs.opts.Xattr {
		return nil, xattrTarget{}, syscall.ENOSYS
	}
	ino, e := fs.inode(nodeid)
	if e != 0 {
		return nil, xattrTarget{}, e
	}
	t, e := fs.xattrTarget(ino)
	if e != 0 {
		ino.release()
		return nil, xattrTarget{}, e
	}
	return ino, t, 0
}

// GetXAttr answers GETXATTR; with an empty dest it reports the size.
func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	if fs.opts.Xattr && blockedXattr(name) {
		return 0, fuse.ENOTSUP
	}
	ino, t, e := fs.xattrInode(h.NodeId)
	if e != 0 {
		return 0, status(e)
	}
	defer ino.release()
	defer t.close()
	cn, e := xattrName(name)
	if e != 0 {
		return 0, status(e)
	}
	var n int
	if t.own {
		n, e = fgetxattr(t.fd, cn, dest)
	} else {
		e = fs.procXattr(t,
			func(dirfd int, p *byte) (e syscall.Errno) { n, e = getxattrat(dirfd, p, cn, dest); return e },
			func(p *byte) (e syscall.Errno) { n, e = getxattr(p, cn, dest); return e })
	}
	if e != 0 {
		return 0, status(e)
	}
	return uint32(n), fuse.OK
}

// ListXAttr answers LISTXATTR; with an empty dest it reports the size.
func (fs *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	ino, t, e := fs.xattrInode(h.NodeId)
	if e != 0 {
		return 0, status(e)
	}
	defer ino.release()
	defer t.close()
	list := func(buf []byte) (n int, e syscall.Errno) {
		if t.own {
			return flistxattr(t.fd, buf)
		}
		e = fs.procXattr(t,
			func(dirfd int, p *byte) (e syscall.Errno) { n, e = listxattrat(dirfd, p, buf); return e },
			func(p *byte) (e syscall.Errno) { n, e = listxattr(p, buf); return e })
		return n, e
	}
	// Read the whole list so the ACL names can be dropped and the size
	// reported is the size the guest will get.
	size, e := list(nil)
	if e != 0 {
		return 0, status(e)
	}
	buf := make([]byte, size)
	if size > 0 {
		n, e := list(buf)
		if e != 0 {
			return 0, status(e)
		}
		buf = filterXattrList(buf[:n])
	}
	if len(dest) == 0 {
		return uint32(len(buf)), fuse.OK
	}
	if len(buf) > len(dest) {
		return uint32(len(buf)), fuse.ERANGE
	}
	return uint32(copy(dest, buf)), fuse.OK
}

// filterXattrList drops the blocked names from a NUL-separated list, in place.
func filterXattrList(list []byte) []byte {
	out := list[:0]
	for len(list) > 0 {
		i := bytes.IndexByte(list, 0)
		if i < 0 {
			i = len(list)
		}
		name := list[:i]
		next := list[min(i+1, len(list)):]
		if len(name) > 0 && !blockedXattr(string(name)) {
			out = append(out, name...)
			out = append(out, 0)
		}
		list = next
	}
	return out
}

// SetXAttr answers SETXATTR.
func (fs *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, data []byte) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	if fs.opts.Xattr && blockedXattr(name) {
		return fuse.ENOTSUP
	}
	if int(in.Size) > len(data) {
		return fuse.EINVAL
	}
	data = data[:in.Size]
	ino, t, e := fs.xattrInode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	defer t.close()
	cn, e := xattrName(name)
	if e != 0 {
		return status(e)
	}
	flags := int(in.Flags) & (unix.XATTR_CREATE | unix.XATTR_REPLACE)
	if t.own {
		return status(fsetxattr(t.fd, cn, data, flags))
	}
	return status(fs.procXattr(t,
		func(dirfd int, p *byte) syscall.Errno { return setxattrat(dirfd, p, cn, data, flags) },
		func(p *byte) syscall.Errno { return setxattr(p, cn, data, flags) }))
}

// RemoveXAttr answers REMOVEXATTR.
func (fs *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	if fs.opts.Xattr && blockedXattr(name) {
		return fuse.ENOTSUP
	}
	ino, t, e := fs.xattrInode(h.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	defer t.close()
	cn, e := xattrName(name)
	if e != 0 {
		return status(e)
	}
	if t.own {
		return status(fremovexattr(t.fd, cn))
	}
	return status(fs.procXattr(t,
		func(dirfd int, p *byte) syscall.Errno { return removexattrat(dirfd, p, cn) },
		func(p *byte) syscall.Errno { return removexattr(p, cn) }))
}

// xattrName is name as a C string; a name with a NUL (which the guest's
// kernel never sends) is EINVAL.
func xattrName(name string) (*byte, syscall.Errno) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, syscall.EINVAL
	}
	return p, 0
}
