// Package harness is what every VM test under test/e2e shares: the guest
// kernels test/kernels builds (Env), an initramfs written as a newc cpio
// archive around the one guest init (test/e2e/guestinit), QEMU 7.2 under TCG
// with memfd guest RAM and vhost-user-fs-pci (VM), a sandbox share laid out as
// Kata lays it out (Share), and a virtio-fs daemon started through
// kata-virtiofsd, built from this tree, with Kata's argv and the listening
// socket as fd 3 (DaemonSpec, StartDaemon).
//
// Spec: the initramfs buffer format (Linux
// Documentation/driver-api/early-userspace/buffer-format.rst), VIRTIO 1.2
// section 5.11 and QEMU's vhost-user-fs device, and the command line Kata
// ≥3.2 gives virtio_fs_daemon.
package harness
