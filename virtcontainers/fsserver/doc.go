// Package fsserver joins the vhost-user transport to a FUSE file system: it
// is the virtio-fs device (one high-priority queue and request queues) whose
// requests go through go-fuse's ProtocolServer to a fuse.RawFileSystem. The
// process that serves it (kata-virtiofsd's serve mode) is package fsdaemon.
//
// Spec: VIRTIO 1.2 section 5.11 (file system device) and the FUSE protocol
// (include/uapi/linux/fuse.h).
package fsserver
