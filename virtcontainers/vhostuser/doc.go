// Package vhostuser is a vhost-user backend (device side) for one virtio
// device with split virtqueues: it speaks the frontend protocol on a unix
// socket (usually QEMU), maps the guest memory regions whose fds the frontend
// sends, and hands each descriptor chain the guest makes available to a
// Device as scatter-gather slices of guest memory. Everything the guest
// writes into its rings and descriptors is treated as hostile and checked
// against the mapped regions before use.
//
// Spec: the vhost-user protocol (QEMU docs/interop/vhost-user.rst) and the
// split virtqueue format of Virtual I/O Device (VIRTIO) 1.2, section 2.7.
package vhostuser
