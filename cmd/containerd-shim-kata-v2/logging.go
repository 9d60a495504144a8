package main

import (
	"io"
	"log/syslog"
	"os"
	"sync"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Kata's shim logs with these fields and this syslog tag; operators' filters
// and dashboards match them.
const (
	kataLogSource = "containerd-kata-shim-v2"
	kataLogName   = "containerd-shim-v2"
	kataSyslogTag = "kata"
)

// newLogger returns a logger with Kata's fields that writes to the bundle's
// log FIFO (when fifoPath names one that containerd is reading) and to
// syslog. It never writes to stdout or stderr: containerd reads those as
// start's answer. Sinks are opened on the first entry, so a start that logs
// nothing opens nothing.
func newLogger(debug bool, fifoPath string) (*logrus.Entry, *sinkHook) {
	l := logrus.New()
	l.Out = io.Discard
	l.SetFormatter(&logrus.TextFormatter{TimestampFormat: log.RFC3339NanoFixed, FullTimestamp: true, DisableColors: true})
	if debug {
		l.SetLevel(logrus.DebugLevel)
	}
	h := &sinkHook{fifoPath: fifoPath}
	l.AddHook(h)
	return l.WithFields(logrus.Fields{"source": kataLogSource, "name": kataLogName, "pid": os.Getpid()}), h
}

// sinkHook sends formatted entries to the FIFO and syslog.
type sinkHook struct {
	fifoPath string

	mu     sync.Mutex
	opened bool
	fifo   *os.File
	syslog *syslog.Writer
}

func (h *sinkHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *sinkHook) Fire(e *logrus.Entry) error {
	line, err := e.Logger.Formatter.Format(e)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open()
	if h.fifo != nil {
		// Non-blocking: a full pipe drops the line rather than stall start.
		_, _ = h.fifo.Write(line)
	}
	if h.syslog != nil {
		msg := string(line)
		switch e.Level {
		case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
			_ = h.syslog.Err(msg)
		case logrus.WarnLevel:
			_ = h.syslog.Warning(msg)
		case logrus.InfoLevel:
			_ = h.syslog.Info(msg)
		default:
			_ = h.syslog.Debug(msg)
		}
	}
	return nil
}

func (h *sinkHook) open() {
	if h.opened {
		return
	}
	h.opened = true
	if h.fifoPath != "" {
		// O_NONBLOCK: open fails (ENXIO) instead of waiting when nobody
		// reads the FIFO (the binary run by hand, or containerd gone); a
		// missing FIFO (ENOENT) is the same case. Syslog still has the line.
		fd, err := unix.Open(h.fifoPath, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
				h.fifo = os.NewFile(uintptr(fd), h.fifoPath)
			} else {
				unix.Close(fd)
			}
		}
	}
	// No syslog daemon (no /dev/log) is not an error: the FIFO still has it.
	if w, err := syslog.New(syslog.LOG_INFO|syslog.LOG_USER, kataSyslogTag); err == nil {
		h.syslog = w
	}
}

// Close closes the sinks that were opened.
func (h *sinkHook) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fifo != nil {
		h.fifo.Close()
		h.fifo = nil
	}
	if h.syslog != nil {
		h.syslog.Close()
		h.syslog = nil
	}
}
