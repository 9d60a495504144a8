package passthroughfs

import (
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// dirBufMax caps the getdents64 buffer of one READDIR; dirBufMin holds at
// least one entry with a 255-byte name.
const (
	dirBufMax = 32 << 10
	dirBufMin = 1 << 10
)

// dirBufs are getdents64 buffers lent to one READDIR each: an open directory
// keeps none, so memory follows the requests in flight, not the handles a
// guest holds open.
var dirBufs = sync.Pool{New: func() any { b := make([]byte, dirBufMax); return &b }}

// dirStream is the read position of an open directory.
type dirStream struct {
	mu sync.Mutex
	// off is the directory offset after the last entry sent.
	off uint64
	// ahead: the host descriptor was read past off (entries that did not
	// fit the reply), so the next READDIR seeks back to off.
	ahead bool
}

// dirBufSize sizes the getdents64 buffer for a reply of size bytes: a host
// dirent is about as large as a READDIR entry, a READDIRPLUS entry carries
// 128 bytes of attributes more, so reading far beyond what fits would only
// be thrown away and read again.
func dirBufSize(size uint32, plus bool) int {
	n := int(size)
	if plus {
		n /= 4
	}
	return min(max(n, dirBufMin), dirBufMax)
}

// OpenDir answers OPENDIR.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ino, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	if ino.mode != unix.S_IFDIR {
		return fuse.Status(syscall.ENOTDIR)
	}
	fd, e := fs.reopen(ino, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK)
	if e != 0 {
		return status(e)
	}
	out.Fh = fs.handles.add(&handle{fd: fd, nodeid: in.NodeId, dir: &dirStream{}})
	out.OpenFlags = fs.openOutFlags(true)
	return fuse.OK
}

// ReleaseDir answers RELEASEDIR.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.handles.remove(in.Fh, in.NodeId)
}

// FsyncDir answers FSYNCDIR.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.Fsync(cancel, in)
}

// ReadDir answers READDIR.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

// ReadDirPlus answers READDIRPLUS: every entry but "." and ".." comes with a
// lookup, which the kernel counts like a LOOKUP's.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}

// direntHeader is linux_dirent64 without its name.
type direntHeader struct {
	Ino    uint64
	Off    int64
	Reclen uint16
	Type   uint8
}

// direntNameOff is where d_name starts in linux_dirent64.
const direntNameOff = int(unsafe.Offsetof(unix.Dirent{}.Name))

func (fs *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer h.release()
	ds := h.dir
	if ds == nil {
		return fuse.Status(syscall.ENOTDIR)
	}
	var dir *inode
	if plus {
		if dir, e = fs.inode(in.NodeId); e != 0 {
			return status(e)
		}
		defer dir.release()
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if in.Offset != ds.off || ds.ahead {
		if _, err := unix.Seek(h.fd, int64(in.Offset), unix.SEEK_SET); err != nil {
			return fuse.ToStatus(err)
		}
		ds.off, ds.ahead = in.Offset, false
	}
	bp := dirBufs.Get().(*[]byte)
	defer dirBufs.Put(bp)
	buf := (*bp)[:dirBufSize(in.Size, plus)]
	var pos, end int
	defer func() {
		if pos < end {
			ds.ahead = true
		}
	}()
	sent := 0
	for {
		if pos >= end {
			n, err := unix.Getdents(h.fd, buf)
			if err != nil {
				if sent > 0 {
					return fuse.OK
				}
				return fuse.ToStatus(err)
			}
			if n <= 0 {
				return fuse.OK
			}
			pos, end = 0, n
		}
		rec := buf[pos:end]
		if len(rec) < direntNameOff+1 {
			return fuse.EIO
		}
		de := (*direntHeader)(unsafe.Pointer(&rec[0]))
		if int(de.Reclen) > len(rec) || int(de.Reclen) <= direntNameOff {
			return fuse.EIO
		}
		nameBytes := rec[direntNameOff:de.Reclen]
		nameLen := 0
		for nameLen < len(nameBytes) && nameBytes[nameLen] != 0 {
			nameLen++
		}
		if nameLen == 0 || nameLen == len(nameBytes) {
			return fuse.EIO
		}
		// The name aliases the buffer: DirEntryList copies it at once.
		name := unsafe.String(&nameBytes[0], nameLen)
		ent := fuse.DirEntry{Mode: uint32(de.Type) << 12, Name: name, Ino: de.Ino, Off: uint64(de.Off)}
		if plus {
			if !fs.addPlus(dir, out, ent, &nameBytes[0]) {
				return fuse.OK
			}
		} else if !out.AddDirEntry(ent) {
			return fuse.OK
		}
		pos += int(de.Reclen)
		ds.off = uint64(de.Off)
		sent++
	}
}

// addPlus adds one READDIRPLUS entry, reporting false when it does not fit.
// The lookup comes first so that an entry that vanished meanwhile is sent
// without one (node ID 0, which the kernel skips) rather than failing the
// whole listing; a lookup whose entry does not fit is given back.
func (fs *FS) addPlus(dir *inode, out *fuse.DirEntryList, ent fuse.DirEntry, cname *byte) bool {
	var eo fuse.EntryOut
	looked := false
	if ent.Name != "." && ent.Name != ".." {
		looked = fs.lookupAt(dir, cname, false, &eo) == 0
	}
	dst := out.AddDirLookupEntry(ent)
	if dst == nil {
		if looked {
			fs.inodes.forget(eo.NodeId, 1)
		}
		return false
	}
	if looked {
		*dst = eo
		// The type in the dirent must agree with the entry's attributes
		// if the name was replaced between getdents and the lookup.
		out.FixMode(eo.Attr.Mode)
	} else {
		dst.Attr.Ino = ent.Ino
		dst.Attr.Mode = ent.Mode
	}
	return true
}
