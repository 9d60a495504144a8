package passthroughfs

import (
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// parentAndName validates name and pins the parent directory.
func (fs *FS) parentAndName(nodeid uint64, name string) (*inode, syscall.Errno) {
	if e := checkName(name); e != 0 {
		return nil, e
	}
	return fs.inode(nodeid)
}

// makeEntry creates name in directory nodeid as the caller through mk, which
// gets the directory's fd and the name as a C string, and answers with the
// new entry. It holds what MKDIR, MKNOD and SYMLINK share.
func (fs *FS) makeEntry(nodeid uint64, name string, caller *fuse.Caller, out *fuse.EntryOut, mk func(dirfd int, name *byte) syscall.Errno) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	parent, e := fs.parentAndName(nodeid, name)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	var cn cname
	p := cn.set(name)
	creds, e := fs.becomeCaller(caller)
	if e != 0 {
		return status(e)
	}
	e = mk(parent.fd, p)
	creds.restore()
	if e != 0 {
		return status(e)
	}
	return status(fs.lookupAt(parent, p, false, out))
}

// Mkdir answers MKDIR.
func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.makeEntry(in.NodeId, name, &in.Caller, out, func(dirfd int, p *byte) syscall.Errno {
		_, _, e := unix.Syscall(unix.SYS_MKDIRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(in.Mode&0o7777))
		return e
	})
}

// Mknod answers MKNOD.
func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	// The kernel sends rdev as new_encode_dev does.
	major := (in.Rdev & 0xfff00) >> 8
	minor := (in.Rdev & 0xff) | ((in.Rdev >> 12) & 0xfff00)
	return fs.makeEntry(in.NodeId, name, &in.Caller, out, func(dirfd int, p *byte) syscall.Errno {
		_, _, e := unix.Syscall6(unix.SYS_MKNODAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			uintptr(in.Mode), uintptr(unix.Mkdev(major, minor)), 0, 0)
		return e
	})
}

// Symlink answers SYMLINK. The target is stored as given: the guest resolves
// symlinks in its own namespace, the daemon never follows them.
func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	if e := checkLinkTarget(target); e != 0 {
		return status(e)
	}
	t, err := unix.BytePtrFromString(target)
	if err != nil {
		return fuse.EINVAL
	}
	return fs.makeEntry(h.NodeId, name, &h.Caller, out, func(dirfd int, p *byte) syscall.Errno {
		_, _, e := unix.Syscall(unix.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dirfd), uintptr(unsafe.Pointer(p)))
		return e
	})
}

// Link answers LINK.
func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	parent, e := fs.parentAndName(in.NodeId, name)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	ino, e := fs.inode(in.Oldnodeid)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	var cn cname
	p := cn.set(name)
	var fdn fdName
	// linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; following the
	// /proc/self/fd magic link links the inode itself.
	_, _, e = unix.Syscall6(unix.SYS_LINKAT, uintptr(fs.procFD), uintptr(unsafe.Pointer(fdn.set(ino.fd))),
		uintptr(parent.fd), uintptr(unsafe.Pointer(p)), unix.AT_SYMLINK_FOLLOW, 0)
	if e != 0 {
		return status(e)
	}
	return status(fs.lookupAt(parent, p, false, out))
}

func (fs *FS) unlink(nodeid uint64, name string, flags int) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	parent, e := fs.parentAndName(nodeid, name)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	var cn cname
	_, _, e = unix.Syscall(unix.SYS_UNLINKAT, uintptr(parent.fd), uintptr(unsafe.Pointer(cn.set(name))), uintptr(flags))
	return status(e)
}

// Unlink answers UNLINK.
func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.unlink(h.NodeId, name, 0)
}

// Rmdir answers RMDIR.
func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.unlink(h.NodeId, name, unix.AT_REMOVEDIR)
}

// renameFlags are the renameat2 flags a guest may pass.
const renameFlags = unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE | unix.RENAME_WHITEOUT

// Rename answers RENAME and RENAME2.
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	var flags uint32
	// RENAME carries no flags word: go-fuse's RenameIn.Flags would alias
	// the names that follow the header.
	if in.Opcode != opRename {
		flags = in.Flags
	}
	if flags&^renameFlags != 0 {
		return fuse.EINVAL
	}
	if e := checkName(newName); e != 0 {
		return status(e)
	}
	oldDir, e := fs.parentAndName(in.NodeId, oldName)
	if e != 0 {
		return status(e)
	}
	defer oldDir.release()
	newDir, e := fs.inode(in.Newdir)
	if e != 0 {
		return status(e)
	}
	defer newDir.release()
	var on, nn cname
	_, _, e = unix.Syscall6(unix.SYS_RENAMEAT2, uintptr(oldDir.fd), uintptr(unsafe.Pointer(on.set(oldName))),
		uintptr(newDir.fd), uintptr(unsafe.Pointer(nn.set(newName))), uintptr(flags), 0)
	return status(e)
}

// opRename is FUSE_RENAME, the flagless rename.
const opRename = 12

// Readlink answers READLINK.
func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	ino, e := fs.inode(h.NodeId)
	if e != 0 {
		return nil, status(e)
	}
	defer ino.release()
	buf := make([]byte, unix.PathMax)
	var empty byte
	r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(ino.fd), uintptr(unsafe.Pointer(&empty)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return nil, status(e)
	}
	return buf[:r], fuse.OK
}
