// Package e2e is the VM truth table: real guest kernels (test/kernels, with
// and without Linux c4d361f66ac9) booted under QEMU TCG with a vhost-user-fs
// share served by the real virtiofsd daemons, started through kata-virtiofsd
// with Kata's argv. Each cell plays a container that loses every mount on its
// volume's original place, applies pressure and reports whether the volume
// still reads (KNOWLEDGE.md, "The bug"). Runs only with KSG_E2E=1 (make e2e).
package e2e
