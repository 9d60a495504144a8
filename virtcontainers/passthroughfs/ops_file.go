package passthroughfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// openFlags turns the guest's open flags into the host's, as virtiofsd:
// O_APPEND is emulated per write, O_NOATIME and O_DIRECT are dropped unless
// allowed, and nothing that changes what is opened (O_CREAT, O_PATH,
// O_TMPFILE, O_NOFOLLOW ...) passes.
func (fs *FS) openFlags(guest uint32) (flags int, appendMode bool) {
	g := int(guest)
	keep := unix.O_ACCMODE | unix.O_TRUNC | unix.O_NONBLOCK | unix.O_SYNC | unix.O_DSYNC | unix.O_LARGEFILE
	if fs.opts.AllowDirectIO {
		keep |= unix.O_DIRECT
	}
	if fs.opts.PreserveNoatime {
		keep |= unix.O_NOATIME
	}
	return g&keep | unix.O_CLOEXEC, g&unix.O_APPEND != 0
}

// erofs answers a request that would modify a read-only share.
const erofs = fuse.Status(syscall.EROFS)

// readOnlyOpen refuses, on a read-only share, an open that could modify the
// file: one for writing, or with O_TRUNC (which truncates even a read-only
// open).
func readOnlyOpen(guest uint32) syscall.Errno {
	if guest&unix.O_ACCMODE != unix.O_RDONLY || guest&unix.O_TRUNC != 0 {
		return syscall.EROFS
	}
	return 0
}

// openOutFlags are the FOPEN_* flags virtiofsd returns for each cache policy.
func (fs *FS) openOutFlags(dir bool) uint32 {
	switch fs.opts.cache() {
	case CacheNever:
		if !dir {
			return fuse.FOPEN_DIRECT_IO
		}
	case CacheMetadata:
		if dir {
			return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
		}
		return fuse.FOPEN_DIRECT_IO
	case CacheAlways:
		if dir {
			return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
		}
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}

// Open answers OPEN.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ino, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	// The kernel opens only regular files through FUSE; special files are
	// the guest's own devices, and a host FIFO or device must not be
	// opened by the daemon.
	switch ino.mode {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return fuse.Status(syscall.EISDIR)
	default:
		return fuse.EINVAL
	}
	if fs.opts.ReadOnly {
		if e := readOnlyOpen(in.Flags); e != 0 {
			return status(e)
		}
	}
	flags, appendMode := fs.openFlags(in.Flags)
	fd, e := fs.reopen(ino, flags)
	if e != 0 {
		return status(e)
	}
	out.Fh = fs.handles.add(&handle{fd: fd, nodeid: in.NodeId, appendMode: appendMode})
	out.OpenFlags = fs.openOutFlags(false)
	return fuse.OK
}

// Create answers CREATE: the file is made exclusively as the caller; if it
// already exists and the guest did not ask for O_EXCL, it is opened instead.
// On a read-only share only the latter can happen, for reading: a name that
// does not exist (the guest's negative entry may be stale) gets EROFS.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if fs.opts.ReadOnly && (readOnlyOpen(in.Flags) != 0 || in.Flags&unix.O_EXCL != 0) {
		return erofs
	}
	parent, e := fs.parentAndName(in.NodeId, name)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	var cn cname
	p := cn.set(name)
	flags, appendMode := fs.openFlags(in.Flags)
	fd := -1
	if fs.opts.ReadOnly {
		e = syscall.EEXIST
	} else {
		creds, ce := fs.becomeCaller(&in.Caller)
		if ce != 0 {
			return status(ce)
		}
		fd, e = openat(parent.fd, p, (flags&^unix.O_TRUNC)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, in.Mode&0o7777)
		creds.restore()
	}
	if e == syscall.EEXIST && in.Flags&unix.O_EXCL == 0 {
		if e := fs.lookupAt(parent, p, false, &out.EntryOut); e != 0 {
			if fs.opts.ReadOnly && e == syscall.ENOENT {
				return erofs
			}
			return status(e)
		}
		ino := fs.inodes.get(out.NodeId)
		if ino == nil {
			return fuse.EBADF
		}
		defer ino.release()
		if ino.mode != unix.S_IFREG {
			fs.inodes.forget(out.NodeId, 1)
			if ino.mode == unix.S_IFDIR {
				return fuse.Status(syscall.EISDIR)
			}
			return fuse.EINVAL
		}
		if fd, e = fs.reopen(ino, flags); e != 0 {
			fs.inodes.forget(out.NodeId, 1)
			return status(e)
		}
	} else if e != 0 {
		return status(e)
	} else if e := fs.enterFromFD(parent, fd, &out.EntryOut); e != 0 {
		closeFD(fd)
		return status(e)
	}
	out.Fh = fs.handles.add(&handle{fd: fd, nodeid: out.NodeId, appendMode: appendMode})
	out.OpenFlags = fs.openOutFlags(false)
	return fuse.OK
}

// enterFromFD takes a lookup on the file open at fd (just created), through a
// new O_PATH descriptor to that very file, so that a concurrent rename of
// the name cannot make the entry describe another file.
func (fs *FS) enterFromFD(parent *inode, fd int, out *fuse.EntryOut) syscall.Errno {
	var fdn fdName
	pfd, e := openat(fs.procFD, fdn.set(fd), unix.O_PATH, 0)
	if e != 0 {
		return e
	}
	return fs.enter(parent, pfd, out)
}

// Tmpfile answers TMPFILE (open(O_TMPFILE) in the guest).
func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	parent, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	flags, appendMode := fs.openFlags(in.Flags)
	dot := [2]byte{'.', 0}
	creds, e := fs.becomeCaller(&in.Caller)
	if e != 0 {
		return status(e)
	}
	fd, e := openat(parent.fd, &dot[0], flags&^unix.O_TRUNC|unix.O_TMPFILE, in.Mode&0o7777)
	creds.restore()
	if e != 0 {
		return status(e)
	}
	if e := fs.enterFromFD(parent, fd, &out.EntryOut); e != 0 {
		closeFD(fd)
		return status(e)
	}
	out.Fh = fs.handles.add(&handle{fd: fd, nodeid: out.NodeId, appendMode: appendMode})
	out.OpenFlags = fs.openOutFlags(false)
	return fuse.OK
}

// file pins the open handle fh of nodeid.
func (fs *FS) file(fh, nodeid uint64) (*handle, syscall.Errno) {
	if h := fs.handles.get(fh, nodeid); h != nil {
		return h, 0
	}
	return nil, syscall.EBADF
}

// Read answers READ. The data moves when the session sends the reply: by
// splice from the descriptor on /dev/fuse, by preadv straight into guest
// memory on virtio-fs, so nothing is copied or allocated here.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return nil, status(e)
	}
	if int64(in.Offset) < 0 {
		h.release()
		return nil, fuse.EINVAL
	}
	if in.Size == 0 {
		// A /dev/fuse session does not call Done for an empty result.
		h.release()
		return fuse.ReadResultData(nil), fuse.OK
	}
	r := fs.reads.Get().(*readResult)
	*r = readResult{fs: fs, h: h, off: int64(in.Offset), sz: int(in.Size)}
	return r, fuse.OK
}

// readResult is a pooled fuse.ReadResult over an open handle; it holds a
// reference on the handle until the session is done with it.
type readResult struct {
	fs  *FS
	h   *handle
	off int64
	sz  int
}

func (r *readResult) Size() int { return r.sz }

// Bytes reads into buf (the /dev/fuse path without splice).
func (r *readResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:min(len(buf), r.sz)]
	one := [1][]byte{buf}
	n, e := preadFull(r.h.fd, one[:], r.off, r.fs.opts.MaxIOPerCall)
	if e != 0 {
		return nil, status(e)
	}
	return buf[:n], fuse.OK
}

// Readv reads straight into the reply's scatter list (virtio-fs).
func (r *readResult) Readv(dst [][]byte) (int, fuse.Status) {
	n, e := preadFull(r.h.fd, dst, r.off, r.fs.opts.MaxIOPerCall)
	return n, status(e)
}

// Seekable lets a /dev/fuse session splice from the descriptor.
func (r *readResult) Seekable() (uintptr, int64, int) { return uintptr(r.h.fd), r.off, r.sz }

// Done returns the handle reference and the result to the pool.
func (r *readResult) Done() {
	if r.h == nil {
		return
	}
	r.h.release()
	fs := r.fs
	*r = readResult{}
	fs.reads.Put(r)
}

// Writev answers WRITE from the request's scatter list without copying.
func (fs *FS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if fs.opts.ReadOnly {
		return 0, erofs
	}
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return 0, status(e)
	}
	defer h.release()
	if int64(in.Offset) < 0 {
		return 0, fuse.EINVAL
	}
	data = capIov(data, int(in.Size))
	flags, limit := 0, fs.opts.MaxIOPerCall
	// Page-cache writebacks (WRITE_CACHE, e.g. from mmap) carry their true
	// offset; only the guest's own write(2)s on an O_APPEND file append.
	if h.appendMode && in.WriteFlags&fuse.WRITE_CACHE == 0 {
		flags = unix.RWF_APPEND
	}
	if h.appendMode {
		limit = 0 // one call, as an append must be
	}
	n, e := pwriteFull(h.fd, data, int64(in.Offset), flags, limit)
	if e != 0 {
		return 0, status(e)
	}
	return uint32(n), fuse.OK
}

// capIov limits data to size bytes: the header's size is what the guest
// means to write, whatever the buffers hold.
func capIov(data [][]byte, size int) [][]byte {
	total := 0
	for i, b := range data {
		if total+len(b) > size {
			out := make([][]byte, i+1)
			copy(out, data[:i+1])
			out[i] = b[:size-total]
			return out
		}
		total += len(b)
	}
	return data
}

// Write answers WRITE when the session offers one buffer.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	one := [1][]byte{data}
	return fs.Writev(cancel, in, one[:])
}

// Flush answers FLUSH by closing a duplicate of the descriptor, which is what
// close(2) in the guest means for the host file (e.g. NFS close-to-open).
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer h.release()
	fd, err := unix.Dup(h.fd)
	if err != nil {
		return fuse.ToStatus(err)
	}
	return fuse.ToStatus(unix.Close(fd))
}

// Release answers RELEASE.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.handles.remove(in.Fh, in.NodeId)
}

// Fsync answers FSYNC.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer h.release()
	if in.FsyncFlags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		return fuse.ToStatus(unix.Fdatasync(h.fd))
	}
	return fuse.ToStatus(unix.Fsync(h.fd))
}

// Fallocate answers FALLOCATE.
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if fs.opts.ReadOnly {
		return erofs
	}
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer h.release()
	if int64(in.Offset) < 0 || int64(in.Length) <= 0 {
		return fuse.EINVAL
	}
	return fuse.ToStatus(unix.Fallocate(h.fd, in.Mode, int64(in.Offset), int64(in.Length)))
}

// Lseek answers LSEEK (the kernel asks only for SEEK_DATA and SEEK_HOLE).
func (fs *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h, e := fs.file(in.Fh, in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer h.release()
	switch in.Whence {
	case unix.SEEK_SET, unix.SEEK_CUR, unix.SEEK_END, unix.SEEK_DATA, unix.SEEK_HOLE:
	default:
		return fuse.EINVAL
	}
	off, err := unix.Seek(h.fd, int64(in.Offset), int(in.Whence))
	if err != nil {
		return fuse.ToStatus(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

// copyMax bounds one COPY_FILE_RANGE: the reply counts bytes in 32 bits.
const copyMax = 1 << 30

// CopyFileRange answers COPY_FILE_RANGE with copy_file_range(2) on the host,
// which reflinks or copies in the kernel where the filesystems allow.
func (fs *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if fs.opts.ReadOnly {
		return 0, erofs
	}
	src, e := fs.file(in.FhIn, in.NodeId)
	if e != 0 {
		return 0, status(e)
	}
	defer src.release()
	dst, e := fs.file(in.FhOut, in.NodeIdOut)
	if e != 0 {
		return 0, status(e)
	}
	defer dst.release()
	offIn, offOut := int64(in.OffIn), int64(in.OffOut)
	if offIn < 0 || offOut < 0 {
		return 0, fuse.EINVAL
	}
	n, err := unix.CopyFileRange(src.fd, &offIn, dst.fd, &offOut, int(min(in.Len, copyMax)), int(in.Flags))
	if err != nil {
		return 0, fuse.ToStatus(err)
	}
	return uint32(n), fuse.OK
}
