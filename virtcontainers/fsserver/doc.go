// Package fsserver joins the vhost-user transport to a FUSE file system: it
// is the virtio-fs device (one high-priority queue and request queues) whose
// requests go through go-fuse's ProtocolServer to a fuse.RawFileSystem, and
// Serve, the serve mode of kata-virtiofsd built from them.
//
// Spec: VIRTIO 1.2 section 5.11 (file system device) and the FUSE protocol
// (include/uapi/linux/fuse.h).
package fsserver
