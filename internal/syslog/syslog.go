package syslog

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Priority is a syslog facility ORed with a severity, as in log/syslog.
type Priority int

// The severities and the facility this package's users need.
const (
	SeverityCrit    Priority = 2
	SeverityErr     Priority = 3
	SeverityWarning Priority = 4
	SeverityInfo    Priority = 6
	SeverityDebug   Priority = 7

	FacilityUser Priority = 1 << 3

	severityMask = 0x07
)

// localPaths are where a local syslog daemon listens, as log/syslog looks.
var localPaths = []string{"/dev/log", "/var/run/syslog", "/var/run/log"}

// networks are tried in this order for each path, as glibc's syslog(3) and
// log/syslog do.
var networks = []string{"unixgram", "unix"}

// Writer sends lines to one syslog socket, dialling again after a failed
// send, as log/syslog's Writer does.
type Writer struct {
	facility Priority
	tag      string
	// paths are the sockets tried in turn: localPaths, or the one given.
	paths []string

	mu   sync.Mutex
	conn *net.UnixConn
}

// Dial connects to the syslog daemon at path (empty: the local one, at the
// first of localPaths that answers) and returns a Writer that tags its
// lines with tag under facility.
func Dial(path string, facility Priority, tag string) (*Writer, error) {
	w := &Writer{facility: facility &^ severityMask, tag: tag, paths: localPaths}
	if path != "" {
		w.paths = []string{path}
	}
	if err := w.connect(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) connect() error {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
	var errs []error
	for _, network := range networks {
		for _, path := range w.paths {
			c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: path, Net: network})
			if err == nil {
				w.conn = c
				return nil
			}
			errs = append(errs, err)
		}
	}
	return fmt.Errorf("syslog: no daemon answers at %s: %w", strings.Join(w.paths, ", "), errors.Join(errs...))
}

// Write sends msg with severity, dialling once more if the send fails.
func (w *Writer) Write(severity Priority, msg string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		if err := w.send(severity, msg); err == nil {
			return nil
		}
	}
	if err := w.connect(); err != nil {
		return err
	}
	return w.send(severity, msg)
}

func (w *Writer) send(severity Priority, msg string) error {
	nl := ""
	if !strings.HasSuffix(msg, "\n") {
		nl = "\n"
	}
	_, err := fmt.Fprintf(w.conn, "<%d>%s %s[%d]: %s%s", w.facility|severity&severityMask,
		time.Now().Format(time.Stamp), w.tag, os.Getpid(), msg, nl)
	return err
}

// Close closes the connection.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	return err
}

// Hook is a logrus hook that sends every entry, formatted by its logger,
// to a Writer with the severity of its level (as logrus's syslog hook
// does).
type Hook struct{ w *Writer }

// NewHook returns a Hook sending to w.
func NewHook(w *Writer) *Hook { return &Hook{w: w} }

// Levels is every level.
func (h *Hook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire sends e.
func (h *Hook) Fire(e *logrus.Entry) error {
	line, err := e.String()
	if err != nil {
		return fmt.Errorf("syslog: format entry: %w", err)
	}
	return h.w.Write(severityOf(e.Level), line)
}

func severityOf(l logrus.Level) Priority {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel:
		return SeverityCrit
	case logrus.ErrorLevel:
		return SeverityErr
	case logrus.WarnLevel:
		return SeverityWarning
	case logrus.InfoLevel:
		return SeverityInfo
	default:
		return SeverityDebug
	}
}

// Answers reports whether a syslog daemon accepts a connection at path:
// datagram first, as glibc tries, then stream. The connect does not block:
// on a unix socket it completes or fails at once, and a stream listener
// whose backlog is full (a stuck daemon) refuses with EAGAIN, which is no
// answer.
func Answers(path string) bool {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_STREAM} {
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return false
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		unix.Close(fd)
		if err == nil {
			return true
		}
	}
	return false
}
