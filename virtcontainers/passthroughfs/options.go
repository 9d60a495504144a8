package passthroughfs

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// CachePolicy is the guest caching policy, as virtiofsd's --cache.
type CachePolicy string

const (
	// CacheNever: no data cache (direct I/O on files), no entry or attribute
	// cache, no READDIRPLUS.
	CacheNever CachePolicy = "never"
	// CacheMetadata: direct I/O on files, but directories, entries and
	// attributes are cached for a day.
	CacheMetadata CachePolicy = "metadata"
	// CacheAuto: close-to-open consistency, entries and attributes valid 1s.
	// The default.
	CacheAuto CachePolicy = "auto"
	// CacheAlways: the guest keeps its data cache across opens, entries and
	// attributes are valid for a day.
	CacheAlways CachePolicy = "always"
)

// parseCachePolicy accepts the values virtiofsd's --cache accepts.
func parseCachePolicy(s string) (CachePolicy, error) {
	switch p := CachePolicy(strings.ToLower(s)); p {
	case CacheNever, CacheMetadata, CacheAuto, CacheAlways:
		return p, nil
	}
	return "", fmt.Errorf("cache policy %q: want never, metadata, auto or always: %w", s, errdefs.ErrInvalidArgument)
}

// timeout is the entry and attribute validity virtiofsd derives from the policy.
func (p CachePolicy) timeout() time.Duration {
	switch p {
	case CacheNever:
		return 0
	case CacheMetadata, CacheAlways:
		return 24 * time.Hour
	}
	return time.Second
}

// Options configure an FS. The zero value is virtiofsd's default behaviour
// without --announce-submounts and without --xattr.
type Options struct {
	// Cache is the caching policy; empty means CacheAuto.
	Cache CachePolicy
	// AnnounceSubmounts sets FUSE_ATTR_SUBMOUNT on directories whose st_dev or
	// mount ID differs from their parent's, as virtiofsd --announce-submounts.
	AnnounceSubmounts bool
	// Xattr enables extended attributes (virtiofsd --xattr); without it the
	// xattr operations answer ENOSYS and the guest stops asking.
	Xattr bool
	// AllowDirectIO passes O_DIRECT from the guest through (virtiofsd
	// --allow-direct-io); otherwise it is dropped.
	AllowDirectIO bool
	// ReadOnly refuses every request that would modify the share with EROFS
	// (virtiofsd --readonly): creating, removing, renaming or linking
	// names, SETATTR, writing, FALLOCATE, COPY_FILE_RANGE, xattr changes, an
	// open for writing or with O_TRUNC, and ACCESS asking for W_OK on a
	// regular file, directory or symlink (as Linux on a read-only mount).
	ReadOnly bool
	// PreserveNoatime passes the guest's O_NOATIME through (virtiofsd
	// --preserve-noatime); otherwise it is dropped, because it needs the
	// file's owner or CAP_FOWNER.
	PreserveNoatime bool
	// AllowMmap offers FUSE_DIRECT_IO_ALLOW_MMAP (virtiofsd --allow-mmap), so
	// that a guest kernel that knows it (6.6 and later) lets files opened
	// with direct I/O (cache never or metadata) be mapped shared.
	AllowMmap bool
	// ProcSelfFD, if set, is an open /proc/self/fd directory, for a process
	// whose root no longer shows /proc (after pivot_root). The FS takes it
	// over and closes it on Close.
	ProcSelfFD *os.File
	// Recover, if set, turns on the recovery of submount roots the guest
	// forgot while still using them (protection recover; see RecoverOptions).
	// It only matters with AnnounceSubmounts.
	Recover *RecoverOptions
	// MaxIOPerCall, if positive, is the most bytes one preadv or pwritev2
	// moves: a larger READ or WRITE is served in several system calls, and
	// a short one among them ends the request. Appending writes (a handle
	// the guest opened with O_APPEND) are never cut, so that each lands at
	// the end in one piece. 0, the default: no limit.
	MaxIOPerCall int
}

func (o Options) cache() CachePolicy {
	if o.Cache == "" {
		return CacheAuto
	}
	return o.Cache
}

// MountOptions returns the FUSE session options that go with fs, for
// fuse.NewServer or fuse.NewProtocolServer: the capabilities virtiofsd
// negotiates (no host-side locks, READDIRPLUS unless the cache policy is
// never, submounts, 1 MiB requests). For a /dev/fuse mount they also ask for
// what a virtio-fs guest always mounts with: default_permissions (the kernel
// checks permissions) and allow_other.
func (fs *FS) MountOptions() *fuse.MountOptions {
	extra := uint64(fuse.CAP_SUBMOUNTS | fuse.CAP_ASYNC_DIO | fuse.CAP_ATOMIC_O_TRUNC |
		fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_IOCTL_DIR)
	if fs.opts.AllowMmap {
		extra |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	return &fuse.MountOptions{
		FsName:               "virtiofs",
		Name:                 "ksg",
		AllowOther:           true,
		Options:              []string{"default_permissions"},
		MaxWrite:             1 << 20,
		MaxBackground:        1 << 10,
		DisableXAttrs:        !fs.opts.Xattr,
		DisableReadDirPlus:   fs.opts.cache() == CacheNever,
		ExtraCapabilities:    extra,
		DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_NO_OPEN_SUPPORT,
	}
}
