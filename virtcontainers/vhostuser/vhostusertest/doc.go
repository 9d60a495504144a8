// Package vhostusertest is a vhost-user frontend and virtio driver written
// for tests: it speaks the real protocol over a socket, shares memfd memory
// with the backend and drives real split virtqueues in it, the way QEMU and
// a guest kernel do together. Spec: QEMU docs/interop/vhost-user.rst and
// VIRTIO 1.2 section 2.7.
package vhostusertest
