// Package fsdaemon is the serve mode of kata-virtiofsd: the daemon process
// around the virtio-fs device of package fsserver. It checks the options,
// listens on the vhost-user socket, sets the descriptor limit and the Go
// runtime, ends on SIGTERM, SIGINT or SIGHUP, runs the device in the
// confined child of package fssandbox, and with protection recover keeps
// the share's status file, <state_dir>/status/<sandbox-id>.json (Status).
package fsdaemon
