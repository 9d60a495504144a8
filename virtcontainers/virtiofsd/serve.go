package virtiofsd

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
)

// CheckServe is Translate's counterpart for kata-virtiofsd's own daemon
// (package fsdaemon), which serves the share with protection recover or
// when no upstream is configured. It refuses every option that daemon cannot
// honour, in one error that names each as given (wrapping
// errdefs.ErrNotImplemented), and returns, as given, the options that have no
// effect there but are harmless (see harmlessElsewhere), so that the caller
// can log them.
//
// Honoured, as Rust virtiofsd 1.13 does: the socket (--fd, --socket-path,
// --socket, --socket-group), --shared-dir, --thread-pool-size, --cache (all
// four policies), submount announcing, --xattr, --no-readdirplus,
// --allow-direct-io, --allow-mmap, --readonly, --preserve-noatime,
// --no-killpriv-v2 (its only mode), --sandbox (all three),
// --inode-file-handles=never (its only mode), --rlimit-nofile, --log-level
// and -d, --syslog, --print-capabilities, -f (no effect in Rust either),
// --seccomp (kill, the default as in Rust, log, trap, none: the filter is
// installed in the sandboxed daemon, and fsdaemon refuses an explicit filter
// with --sandbox=none).
func CheckServe(o *Options) (harmless []string, err error) {
	r := &refusals{o: o}
	if o.XattrMap != "" {
		r.add("xattrmap")
	}
	if o.PosixACL {
		r.add("posix-acl")
	}
	if o.SecurityLabel {
		r.add("security-label")
	}
	if o.Writeback {
		r.add("writeback")
	}
	if o.KillprivV2 {
		r.add("killpriv-v2")
	}
	if o.Modcaps != "" {
		r.add("modcaps")
	}
	refuseRustOnly(o, r)
	if len(r.names) > 0 {
		return nil, fmt.Errorf("kata-virtiofsd's own virtio-fs daemon cannot honour %s: remove %s from Kata's "+
			"virtio_fs_extra_args (the README lists what serve mode supports): %w", r, r.them(), errdefs.ErrNotImplemented)
	}
	return harmlessElsewhere(o), nil
}

// LogrusLevel is the logrus level for a --log-level value. "off" is
// logrus.PanicLevel: nothing kata-virtiofsd logs is at that level.
// Unknown values (Parse admits none) give logrus.InfoLevel, the default.
func LogrusLevel(level string) logrus.Level {
	switch level {
	case "off":
		return logrus.PanicLevel
	case "error":
		return logrus.ErrorLevel
	case "warn":
		return logrus.WarnLevel
	case "debug":
		return logrus.DebugLevel
	case "trace":
		return logrus.TraceLevel
	}
	return logrus.InfoLevel
}
