// Package fsservertest is a guest's FUSE driver for tests: it sends FUSE
// requests (include/uapi/linux/fuse.h) over a virtio-fs request queue of
// vhostusertest and decodes the replies, as a Linux guest would.
package fsservertest
