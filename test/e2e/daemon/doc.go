// Package daemon runs the virtio-fs daemons under a real guest: QEMU (TCG)
// with memfd guest RAM and vhost-user-fs-pci, the fixed guest kernel from
// test/kernels and the one guest init (test/e2e/guestinit), each daemon
// started through kata-virtiofsd (built from the tree) with Kata's argv and the listening
// socket as fd 3 (package harness). TestDaemonSmoke and TestDaemonPOSIX run
// the same guest against kata-virtiofsd's own daemon and, as references, the
// Rust virtiofsd 1.13.2 and QEMU's C virtiofsd; TestBenchDaemon (make
// bench-daemon) compares their speed.
//
// Spec: VIRTIO 1.2 section 5.11 and QEMU's vhost-user-fs device; the POSIX
// suite's own (test/posix).
package daemon
