package passthroughfs

import (
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// setattrValid are the SETATTR bits acted upon; FATTR_CTIME, FATTR_LOCKOWNER
// and FATTR_KILL_SUIDGID need nothing from a passthrough without killpriv_v2.
const setattrValid = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE |
	fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW

// setattrPlan is what a SETATTR request asks for, decoded from the guest's
// valid mask.
type setattrPlan struct {
	mode     *uint32
	uid, gid uint32 // ^0: unchanged
	chown    bool
	size     *uint64
	times    *[2]unix.Timespec
}

func planSetattr(in *fuse.SetAttrIn) setattrPlan {
	v := in.Valid
	p := setattrPlan{uid: ^uint32(0), gid: ^uint32(0)}
	if v&fuse.FATTR_MODE != 0 {
		m := in.Mode & 0o7777
		p.mode = &m
	}
	if v&fuse.FATTR_UID != 0 {
		p.uid, p.chown = in.Uid, true
	}
	if v&fuse.FATTR_GID != 0 {
		p.gid, p.chown = in.Gid, true
	}
	if v&fuse.FATTR_SIZE != 0 {
		s := in.Size
		p.size = &s
	}
	if v&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if v&fuse.FATTR_ATIME_NOW != 0 {
			ts[0].Nsec = unix.UTIME_NOW
		} else if v&fuse.FATTR_ATIME != 0 {
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
		if v&fuse.FATTR_MTIME_NOW != 0 {
			ts[1].Nsec = unix.UTIME_NOW
		} else if v&fuse.FATTR_MTIME != 0 {
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
		p.times = &ts
	}
	return p
}

// SetAttr answers SETATTR, in virtiofsd's order: mode, owner, size, times.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	ino, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	var h *handle
	if fh, ok := in.GetFh(); ok {
		if h = fs.handles.get(fh, in.NodeId); h == nil {
			return fuse.EBADF
		}
		defer h.release()
	}
	p := planSetattr(in)
	var fdn fdName
	procName := fdn.set(ino.fd)

	if p.mode != nil {
		if h != nil {
			e = errno(unix.Fchmod(h.fd, *p.mode))
		} else {
			_, _, e = unix.Syscall6(unix.SYS_FCHMODAT, uintptr(fs.procFD), uintptr(unsafe.Pointer(procName)), uintptr(*p.mode), 0, 0, 0)
		}
		if e != 0 {
			return status(e)
		}
	}
	if p.chown {
		var empty byte
		_, _, e = unix.Syscall6(unix.SYS_FCHOWNAT, uintptr(ino.fd), uintptr(unsafe.Pointer(&empty)),
			uintptr(p.uid), uintptr(p.gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, 0)
		if e != 0 {
			return status(e)
		}
	}
	if p.size != nil {
		if int64(*p.size) < 0 {
			return fuse.EINVAL
		}
		if h != nil {
			e = errno(unix.Ftruncate(h.fd, int64(*p.size)))
		} else {
			e = fs.truncate(ino, int64(*p.size))
		}
		if e != 0 {
			return status(e)
		}
	}
	if p.times != nil {
		if h != nil {
			_, _, e = unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(h.fd), 0, uintptr(unsafe.Pointer(&p.times[0])), 0, 0, 0)
		} else {
			_, _, e = unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fs.procFD), uintptr(unsafe.Pointer(procName)),
				uintptr(unsafe.Pointer(&p.times[0])), 0, 0, 0)
		}
		if e != 0 {
			return status(e)
		}
	}
	return status(fs.getattr(ino, out))
}

// truncate resizes a regular file without a guest handle.
func (fs *FS) truncate(ino *inode, size int64) syscall.Errno {
	switch ino.mode {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return syscall.EISDIR
	default:
		return syscall.EINVAL
	}
	fd, e := fs.reopen(ino, unix.O_RDWR|unix.O_NONBLOCK)
	if e != 0 {
		return e
	}
	defer closeFD(fd)
	return errno(unix.Ftruncate(fd, size))
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EIO
}

// Access answers ACCESS with the checks virtiofsd makes (the guest kernel
// already enforces permissions on virtio-fs, which mounts with
// default_permissions).
func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	ino, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	if fs.opts.ReadOnly && in.Mask&unix.W_OK != 0 {
		switch ino.mode {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
			return erofs
		}
	}
	var st unix.Statx_t
	if e := fstatx(ino.fd, &st); e != 0 {
		return status(e)
	}
	return status(accessAllowed(in.Mask, in.Uid, in.Gid, st.Uid, st.Gid, uint32(st.Mode)))
}

func accessAllowed(mask, uid, gid, fileUID, fileGID, mode uint32) syscall.Errno {
	mask &= unix.R_OK | unix.W_OK | unix.X_OK
	can := func(bit uint32) bool {
		return (fileUID == uid && mode&(bit<<6) != 0) ||
			(fileGID == gid && mode&(bit<<3) != 0) ||
			mode&bit != 0
	}
	if mask&unix.R_OK != 0 && uid != 0 && !can(4) {
		return syscall.EACCES
	}
	if mask&unix.W_OK != 0 && uid != 0 && !can(2) {
		return syscall.EACCES
	}
	if mask&unix.X_OK != 0 {
		// Root may execute what anybody may execute.
		if uid == 0 && mode&0o111 == 0 || uid != 0 && !can(1) {
			return syscall.EACCES
		}
	}
	return 0
}
