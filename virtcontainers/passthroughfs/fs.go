package passthroughfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a passthrough filesystem over one host directory. It implements
// fuse.RawFileSystem; methods not listed answer ENOSYS (as virtiofsd does for
// POSIX and BSD locks, which the guest kernel then keeps locally).
type FS struct {
	fuse.RawFileSystem

	opts    Options
	log     *log.Entry
	procFD  int
	procDir *os.File
	root    *inode
	inodes  *inodeTable
	handles *handleTable
	// rec holds forgotten submount roots; nil unless Options.Recover.
	rec *recoveryTable

	entrySec, attrSec   uint64
	entryNsec, attrNsec uint32

	// announce: submounts are announced (option set and the kernel takes them).
	announce atomic.Bool
	// asCaller: create files with the caller's fsuid/fsgid (we run as root).
	asCaller bool
	// noXattrAt: the kernel lacks the *xattrat calls (before Linux 6.13);
	// see procXattr.
	noXattrAt atomic.Bool

	reads     sync.Pool
	closeOnce sync.Once
}

var _ fuse.RawFileSystem = (*FS)(nil)

// New opens root and returns a filesystem serving it. It creates files with
// the modes the guest sends, which the guest kernel has already masked with
// the caller's umask: the process serving it sets its own umask to 0 first,
// as virtiofsd does (a process-wide setting is not the file system's to
// change).
func New(ctx context.Context, root string, opts Options) (*FS, error) {
	if opts.Cache != "" {
		p, err := parseCachePolicy(string(opts.Cache))
		if err != nil {
			return nil, err
		}
		opts.Cache = p
	}
	if opts.MaxIOPerCall < 0 {
		return nil, fmt.Errorf("MaxIOPerCall %d: want 0 (no limit) or a positive number of bytes: %w", opts.MaxIOPerCall, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var class error = errdefs.ErrInvalidArgument
		if errors.Is(err, unix.ENOENT) {
			class = errdefs.ErrNotFound
		}
		return nil, fmt.Errorf("shared directory %q: %w: %w", root, class, err)
	}
	var st unix.Statx_t
	if e := fstatx(fd, &st); e != 0 {
		closeFD(fd)
		return nil, fmt.Errorf("shared directory %q: stat: %w", root, e)
	}
	fs := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          opts,
		log:           log.G(ctx),
		handles:       newHandleTable(),
		asCaller:      os.Geteuid() == 0,
	}
	if opts.ProcSelfFD != nil {
		fs.procDir = opts.ProcSelfFD
	} else if fs.procDir, err = os.OpenFile("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		closeFD(fd)
		return nil, fmt.Errorf("open /proc/self/fd (mount /proc or pass Options.ProcSelfFD): %w", err)
	}
	fs.procFD = int(fs.procDir.Fd())
	// A confined daemon serves "/": its parent's log names the directory.
	if root != "/" {
		fs.log = fs.log.WithField("shared_dir", root)
	}
	if opts.Recover != nil {
		fs.rec = newRecoveryTable(opts.Recover, fs.log)
		fs.rec.rootFD, fs.rec.procFD = fd, fs.procFD
		var ok bool
		if fs.rec.rootPath, ok = readFDLink(fs.procFD, fd); !ok {
			closeFD(fd)
			fs.procDir.Close()
			return nil, fmt.Errorf("shared directory %q: cannot read its name in /proc/self/fd, which submount root recovery needs: %w",
				root, errdefs.ErrFailedPrecondition)
		}
	}
	fs.inodes = newInodeTable(fs.rec)
	if fs.rec != nil {
		fs.rec.t = fs.inodes
		fs.rec.start()
	}
	fs.root = fs.inodes.setRoot(keyOf(&st), fd, uint32(st.Mode)&unix.S_IFMT)
	t := opts.cache().timeout()
	fs.entrySec, fs.entryNsec = uint64(t/time.Second), uint32(t%time.Second)
	fs.attrSec, fs.attrNsec = fs.entrySec, fs.entryNsec
	fs.announce.Store(opts.AnnounceSubmounts)
	fs.reads.New = func() any { return new(readResult) }
	return fs, nil
}

// Close drops every inode and open file and releases the shared directory.
// Call it after the FUSE session has ended. With recovery on it logs the
// recovery totals and reports them a last time.
func (fs *FS) Close() error {
	fs.closeOnce.Do(func() {
		fs.rec.close()
		fs.handles.clear()
		fs.inodes.clear(false)
		fs.procDir.Close()
	})
	return nil
}

// Reset forgets everything the guest had looked up or opened, as virtiofsd
// does when the guest sends DESTROY or INIT again (a rebooted guest). Node IDs
// keep counting up.
func (fs *FS) Reset() {
	fs.handles.clear()
	fs.inodes.clear(true)
}

// SetKernelCapabilities tells the FS which FUSE_* INIT flags the guest kernel
// offered. Without FUSE_SUBMOUNTS submounts are not announced, as in
// virtiofsd. Init calls it for a /dev/fuse session; a virtio-fs transport
// calls it when it sees INIT. Until called, the kernel is assumed capable.
func (fs *FS) SetKernelCapabilities(flags uint64) {
	capable := flags&fuse.CAP_SUBMOUNTS != 0
	if fs.opts.AnnounceSubmounts && !capable {
		fs.log.Warn("guest kernel does not support submounts: not announcing them")
	}
	fs.announce.Store(fs.opts.AnnounceSubmounts && capable)
}

// String names the filesystem for go-fuse.
func (fs *FS) String() string { return "ksg-passthroughfs" }

// Init is called by a /dev/fuse session after INIT.
func (fs *FS) Init(s *fuse.Server) {
	if s != nil {
		fs.SetKernelCapabilities(s.KernelSettings().Flags64())
	}
}

// OnUnmount is called when a /dev/fuse session ends; Close releases resources.
func (fs *FS) OnUnmount() {}

// SetDebug is a no-op: requests are logged by the session.
func (fs *FS) SetDebug(bool) {}

func keyOf(st *unix.Statx_t) inodeKey {
	// The kernel's own dev_t and mount ID fit 32 bits each (inodeKey).
	return inodeKey{dev: st.Dev_major<<20 | st.Dev_minor&(1<<20-1), ino: st.Ino, mnt: uint32(st.Mnt_id)}
}

func status(e syscall.Errno) fuse.Status { return fuse.Status(e) }

// inode returns the pinned inode for nodeid; EBADF for a node ID the guest
// holds no lookup on, as virtiofsd answers. With recovery on, a node ID the
// table does not know goes to recoverInode: the hot path is unchanged.
func (fs *FS) inode(nodeid uint64) (*inode, syscall.Errno) {
	if ino := fs.inodes.get(nodeid); ino != nil {
		return ino, 0
	}
	if fs.rec != nil {
		return fs.recoverInode(nodeid)
	}
	return nil, syscall.EBADF
}

// RecoveryStats returns the counters of submount-root recovery; zero when
// it is off.
func (fs *FS) RecoveryStats() RecoveryStats {
	if fs.rec == nil {
		return RecoveryStats{}
	}
	return fs.rec.Stats()
}

func fillAttr(a *fuse.Attr, st *unix.Statx_t) {
	a.Ino = st.Ino
	a.Size = st.Size
	a.Blocks = st.Blocks
	a.Atime, a.Atimensec = uint64(st.Atime.Sec), st.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(st.Mtime.Sec), st.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(st.Ctime.Sec), st.Ctime.Nsec
	a.Mode = uint32(st.Mode)
	a.Nlink = st.Nlink
	a.Uid, a.Gid = st.Uid, st.Gid
	// The kernel decodes rdev with new_decode_dev, which matches the low 32
	// bits of glibc's makedev for every major below 4096.
	a.Rdev = uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor))
	a.Blksize = st.Blksize
	a.Flags = 0
}

func (fs *FS) setEntryTimeouts(out *fuse.EntryOut) {
	out.EntryValid, out.EntryValidNsec = fs.entrySec, fs.entryNsec
	out.AttrValid, out.AttrValidNsec = fs.attrSec, fs.attrNsec
}

// lookupAt resolves one validated name in parent and takes a lookup on it.
// "." and ".." resolve to parent itself, as virtiofsd's RESOLVE_IN_ROOT
// lookup does, so that no name can climb out of the shared directory.
func (fs *FS) lookupAt(parent *inode, name *byte, dots bool, out *fuse.EntryOut) syscall.Errno {
	var fd int
	var e syscall.Errno
	if dots {
		dot := [2]byte{'.', 0}
		fd, e = openat(parent.fd, &dot[0], unix.O_PATH|unix.O_NOFOLLOW, 0)
	} else {
		fd, e = openat(parent.fd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	}
	if e != 0 {
		return e
	}
	return fs.enter(parent, fd, out)
}

// enter stats the O_PATH descriptor fd of a child of parent, takes a lookup
// on it (the table owns fd from here) and fills the entry.
func (fs *FS) enter(parent *inode, fd int, out *fuse.EntryOut) syscall.Errno {
	var st unix.Statx_t
	if e := fstatx(fd, &st); e != 0 {
		closeFD(fd)
		return e
	}
	key := keyOf(&st)
	mode := uint32(st.Mode) & unix.S_IFMT
	submount := mode == unix.S_IFDIR && fs.announce.Load() &&
		(key.dev != parent.key.dev || key.mnt != parent.key.mnt)
	var fh *fileHandle
	if submount && fs.rec != nil && !fs.rec.noHandles {
		fh = handleOf(fd)
	}
	out.NodeId = fs.inodes.ref(key, fd, mode, submount, fh)
	out.Generation = 0
	fs.setEntryTimeouts(out)
	fillAttr(&out.Attr, &st)
	if submount {
		out.Attr.Flags |= fuse.ATTR_SUBMOUNT
	}
	return 0
}

// handleOf returns the file handle of the file open at fd, or nil where its
// filesystem has none (EOPNOTSUPP) or for any other failure: the O_PATH
// descriptor remains the identity then.
func handleOf(fd int) *fileHandle {
	var empty string
	h, mnt, err := unix.NameToHandleAt(fd, empty, unix.AT_EMPTY_PATH)
	if err != nil {
		return nil
	}
	return &fileHandle{fh: h, mountID: mnt}
}

// reopen opens an inode for I/O: directories through their own O_PATH
// descriptor, everything else through /proc/self/fd, as virtiofsd does.
func (fs *FS) reopen(ino *inode, flags int) (int, syscall.Errno) {
	if ino.mode == unix.S_IFDIR {
		dot := [2]byte{'.', 0}
		return openat(ino.fd, &dot[0], flags&^unix.O_NOFOLLOW, 0)
	}
	var n fdName
	return openat(fs.procFD, n.set(ino.fd), flags&^unix.O_NOFOLLOW, 0)
}

// Lookup answers LOOKUP.
func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if e := checkLookupName(name); e != 0 {
		return status(e)
	}
	parent, e := fs.inode(h.NodeId)
	if e != 0 {
		return status(e)
	}
	defer parent.release()
	var cn cname
	return status(fs.lookupAt(parent, cn.set(name), name == "." || name == "..", out))
}

// Forget answers FORGET and each entry of BATCH_FORGET.
func (fs *FS) Forget(nodeid, nlookup uint64) {
	fs.inodes.forget(nodeid, nlookup)
}

// GetAttr answers GETATTR.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ino, e := fs.inode(in.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	return status(fs.getattr(ino, out))
}

func (fs *FS) getattr(ino *inode, out *fuse.AttrOut) syscall.Errno {
	var st unix.Statx_t
	if e := fstatx(ino.fd, &st); e != 0 {
		return e
	}
	fillAttr(&out.Attr, &st)
	out.AttrValid, out.AttrValidNsec = fs.attrSec, fs.attrNsec
	return 0
}

// StatFs answers STATFS.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	ino, e := fs.inode(h.NodeId)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	var st unix.Statfs_t
	if err := unix.Fstatfs(ino.fd, &st); err != nil {
		return fuse.ToStatus(err)
	}
	*out = fuse.StatfsOut{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), NameLen: uint32(st.Namelen), Frsize: uint32(st.Frsize),
	}
	return fuse.OK
}

// SyncFs syncs the filesystem holding nodeid (FUSE_SYNCFS); nodeid must be
// a directory or regular file (EINVAL otherwise). go-fuse's
// dispatcher has no SYNCFS handler, so a transport that sees opcode 50 calls
// this directly.
func (fs *FS) SyncFs(nodeid uint64) fuse.Status {
	ino, e := fs.inode(nodeid)
	if e != 0 {
		return status(e)
	}
	defer ino.release()
	// The guest names a superblock root, a directory; opening a FIFO or a
	// device node of its choosing to reach the file system is not ours to do.
	if ino.mode != unix.S_IFDIR && ino.mode != unix.S_IFREG {
		return fuse.Status(syscall.EINVAL)
	}
	fd, e := fs.reopen(ino, unix.O_RDONLY|unix.O_NONBLOCK)
	if e != 0 {
		return status(e)
	}
	defer closeFD(fd)
	return fuse.ToStatus(unix.Syncfs(fd))
}
