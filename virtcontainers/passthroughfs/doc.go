// Package passthroughfs serves a host directory over FUSE, as virtiofsd does:
// a go-fuse `fuse.RawFileSystem` (wire level, no node layer) whose inodes are
// O_PATH descriptors keyed by (st_dev, st_ino, mnt_id), whose node IDs come
// from a 64-bit counter and never name two host files, and whose every path
// is resolved relative to a held descriptor so that no name from the guest
// can leave the shared directory. It follows the FUSE protocol as the Linux
// kernel speaks it (include/uapi/linux/fuse.h, protocol 7.x) and matches the
// Rust virtiofsd's observable behaviour: cache policies, announced
// submounts, lookup counts, guest-local locks, xattrs only when enabled.
// With Options.Recover it also recovers announced submount roots that guest
// kernels without Linux commit c4d361f66ac9 forget while still using them
// (recover.go), and reports their counters to its caller.
package passthroughfs
