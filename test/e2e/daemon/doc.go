// Package daemon runs kata-virtiofsd's own virtio-fs daemon under a real
// guest: QEMU (TCG) with memfd guest RAM and vhost-user-fs-pci, a guest
// kernel from test/kernels, and an initramfs whose init (guestinit) mounts the
// share and runs a scenario. The same scenarios run against the Rust and C
// virtiofsd as references, and TestBenchDaemon compares the three.
//
// Spec: VIRTIO 1.2 section 5.11 and QEMU's vhost-user-fs device.
package daemon
