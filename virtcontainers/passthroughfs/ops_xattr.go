package passthroughfs

import (
	"bytes"
	"strconv"
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

// xattrTarget is where an xattr call goes: a descriptor for regular files and
// directories, the /proc/self/fd path for the others (f*xattr refuses O_PATH
// descriptors, and opening a device or FIFO is not safe).
type xattrTarget struct {
	fd   int
	path string
	own  bool
}

func (fs *FS) xattrTarget(ino *inode) (xattrTarget, syscall.Errno) {
	if ino.mode == unix.S_IFREG || ino.mode == unix.S_IFDIR {
		fd, e := fs.reopen(ino, unix.O_RDONLY|unix.O_NONBLOCK)
		if e != 0 {
			return xattrTarget{}, e
		}
		return xattrTarget{fd: fd, own: true}, 0
	}
	return xattrTarget{fd: -1, path: "/proc/self/fd/" + strconv.Itoa(ino.fd)}, 0
}

func (t xattrTarget) close() {
	if t.own {
		closeFD(t.fd)
	}
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
	var n int
	var err error
	if t.own {
		n, err = unix.Fgetxattr(t.fd, name, dest)
	} else {
		n, err = unix.Getxattr(t.path, name, dest)
	}
	if err != nil {
		return 0, fuse.ToStatus(err)
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
	list := func(buf []byte) (int, error) {
		if t.own {
			return unix.Flistxattr(t.fd, buf)
		}
		return unix.Listxattr(t.path, buf)
	}
	// Read the whole list so the ACL names can be dropped and the size
	// reported is the size the guest will get.
	size, err := list(nil)
	if err != nil {
		return 0, fuse.ToStatus(err)
	}
	buf := make([]byte, size)
	if size > 0 {
		n, err := list(buf)
		if err != nil {
			return 0, fuse.ToStatus(err)
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
	flags := int(in.Flags) & (unix.XATTR_CREATE | unix.XATTR_REPLACE)
	if t.own {
		return fuse.ToStatus(unix.Fsetxattr(t.fd, name, data, flags))
	}
	return fuse.ToStatus(unix.Setxattr(t.path, name, data, flags))
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
	if t.own {
		return fuse.ToStatus(unix.Fremovexattr(t.fd, name))
	}
	return fuse.ToStatus(unix.Removexattr(t.path, name))
}
