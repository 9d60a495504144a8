package virtiofsd

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// CheckServe is Translate's counterpart for kata-virtiofsd's own daemon
// (package fsdaemon), which serves the share with protection recover or
// when no upstream is configured. It refuses every option that daemon cannot
// honour, in one error that names each as given (wrapping
// errdefs.ErrNotImplemented), and returns, as given, the options that have no
// effect there but are harmless (see harmlessElsewhere), so that the caller
// can log them.
//
// What it honours, refuses and finds harmless is the option table's
// (optiontable.go: noServe, rustOnly, harmless), from which README's
// serve-mode table is generated. fsdaemon refuses on its own an explicit
// --seccomp filter with --sandbox=none.
func CheckServe(o *Options) (harmless []string, err error) {
	r := &refusals{o: o}
	for i := range options {
		op := &options[i]
		if (op.noServe != nil && op.noServe(o)) || (op.rustOnly != nil && op.rustOnly(o)) {
			r.add(op.givenKey())
		}
	}
	if len(r.names) > 0 {
		return nil, fmt.Errorf("kata-virtiofsd's own virtio-fs daemon cannot honour %s: remove %s from Kata's "+
			"virtio_fs_extra_args (the README lists what serve mode supports): %w", r, r.them(), errdefs.ErrNotImplemented)
	}
	return harmlessElsewhere(o), nil
}

// LogLevel is the log level for a --log-level value. "off" is
// log.PanicLevel: nothing kata-virtiofsd logs is at that level. Unknown
// values (Parse admits none) give log.InfoLevel, the default.
func LogLevel(level string) log.Level {
	switch level {
	case "off":
		return log.PanicLevel
	case "error":
		return log.ErrorLevel
	case "warn":
		return log.WarnLevel
	case "debug":
		return log.DebugLevel
	case "trace":
		return log.TraceLevel
	}
	return log.InfoLevel
}
