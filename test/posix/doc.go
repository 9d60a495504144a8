// Package posix is one POSIX behaviour suite, run against every filesystem
// we serve or compare with: a plain host directory (the reference), our
// passthroughfs on a host FUSE mount, and — compiled with `go test -c` into a
// guest initramfs — virtio-fs shares served by our daemon and by the Rust
// virtiofsd. All(t, dir, opts) runs the table of named checks (Checks) in
// fresh subdirectories of dir. It follows POSIX.1-2017 and the Linux man
// pages for the calls it makes (open(2), rename(2), fcntl(2), flock(2),
// lseek(2) SEEK_DATA/SEEK_HOLE, mmap(2), xattr(7)).
//
// Checks that need another user run this test binary again as a helper
// process (see the init function): root drops to the helper's uid before
// the operation, so no extra program is needed in a guest.
package posix
