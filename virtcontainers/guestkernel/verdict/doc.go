// Package verdict decides whether a guest kernel carries the FUSE submount
// fix (Linux c4d361f66ac9) from the facts an inspection of its image found:
// the kernel's own BTF outranks the operator's fixed_releases, which outrank
// the version string (upstream stable history: fixed in 6.7, 6.6.8, 6.1.70 and
// 5.15.146, never in 5.10.y). It also keeps those facts per image file
// (device, inode, size, mtime, ctime) and build revision in a cache
// directory, so that a sandbox start judges an image seen before without
// reading it. It links no image parser or decompressor: package guestkernel
// reads images and fills the facts; this package is what the shim needs on
// its hot path.
package verdict
