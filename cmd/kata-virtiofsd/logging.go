package main

import (
	"io"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/internal/syslog"
)

// syslogTag is Kata's: our lines sit beside the shim's and virtiofsd's.
const syslogTag = "kata"

// newLogger logs to syslog with Kata's tag when Kata passed --syslog (as
// virtiofsd itself would), else to stderr, which Kata reads. The string it
// returns says why syslog could not be used, if it could not.
// An empty syslogAddr means the local syslog daemon (/dev/log); tests give a
// unixgram socket of their own.
func newLogger(stderr io.Writer, useSyslog bool, syslogAddr string) (*logrus.Logger, string) {
	l := logrus.New()
	l.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: log.RFC3339NanoFixed})
	l.SetOutput(stderr)
	if !useSyslog {
		return l, ""
	}
	w, err := syslog.Dial(syslogAddr, syslog.FacilityUser, syslogTag)
	if err != nil {
		return l, err.Error()
	}
	l.AddHook(syslog.NewHook(w))
	l.SetOutput(io.Discard)
	return l, ""
}
