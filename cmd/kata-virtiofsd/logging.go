package main

import (
	"io"
	"log/syslog"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
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
	network := ""
	if syslogAddr != "" {
		network = "unixgram"
	}
	hook, err := lsyslog.NewSyslogHook(network, syslogAddr, syslog.LOG_INFO|syslog.LOG_USER, syslogTag)
	if err != nil {
		return l, err.Error()
	}
	l.AddHook(hook)
	l.SetOutput(io.Discard)
	return l, ""
}
