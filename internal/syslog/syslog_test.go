package syslog

import (
	"fmt"
	"io"
	gosyslog "log/syslog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// listen starts a syslog daemon of the test's own: a socket of network in
// a temporary directory, and the messages it receives.
func listen(t *testing.T, network string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log")
	got := make(chan string, 16)
	relay := func(c io.Reader) {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}
	switch network {
	case "unixgram":
		c, err := net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		go relay(c)
	case "unix":
		l, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			relay(c)
		}()
	}
	return path, got
}

func receive(t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case m := <-got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("the syslog daemon received nothing")
		return ""
	}
}

// The Stamp timestamp is the one field that differs between two sends.
var stamp = regexp.MustCompile(`^<(\d+)>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d `)

// TestWriterSendsAsLogSyslog: a line reaches the daemon exactly as Go's
// log/syslog sends it to a local socket, over datagrams and streams.
func TestWriterSendsAsLogSyslog(t *testing.T) {
	for _, network := range []string{"unixgram", "unix"} {
		t.Run(network, func(t *testing.T) {
			path, got := listen(t, network)
			w, err := Dial(path, FacilityUser, "kata")
			require.NoError(t, err)
			defer w.Close()
			require.NoError(t, w.Write(SeverityWarning, `level=warning msg="a line"`))
			ours := receive(t, got)

			if network == "unix" {
				// The stream listener takes one connection: the
				// reference gets a daemon of its own.
				path, got = listen(t, network)
			}
			ref, err := gosyslog.Dial(network, path, gosyslog.LOG_INFO|gosyslog.LOG_USER, "kata")
			require.NoError(t, err)
			defer ref.Close()
			require.NoError(t, ref.Warning(`level=warning msg="a line"`))
			theirs := receive(t, got)

			require.Regexp(t, stamp, ours)
			require.Equal(t, stamp.ReplaceAllString(theirs, "<$1>"), stamp.ReplaceAllString(ours, "<$1>"))
			require.Equal(t, fmt.Sprintf("<12>kata[%d]: level=warning msg=\"a line\"\n", os.Getpid()), stamp.ReplaceAllString(ours, "<$1>"))
		})
	}
}

// TestWriterRedials: a daemon that restarted (a new socket at the same
// path) gets the next line; the failed send is retried once on a new
// connection, as log/syslog does.
func TestWriterRedials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	daemon := func() *net.UnixConn {
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		return c
	}
	read := func(c *net.UnixConn) string {
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		require.NoError(t, err)
		return string(buf[:n])
	}
	first := daemon()
	w, err := Dial(path, FacilityUser, "kata")
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Write(SeverityInfo, "before"))
	require.True(t, strings.HasSuffix(read(first), "]: before\n"))

	// The daemon restarts: its socket is closed and made anew.
	first.Close()
	require.NoError(t, os.Remove(path))
	second := daemon()
	defer second.Close()
	require.NoError(t, w.Write(SeverityInfo, "after"))
	require.True(t, strings.HasSuffix(read(second), "]: after\n"))
}

// TestHookSeverities: each logrus level goes out with logrus's syslog
// hook's severity, under the writer's facility.
func TestHookSeverities(t *testing.T) {
	path, got := listen(t, "unixgram")
	w, err := Dial(path, FacilityUser, "kata")
	require.NoError(t, err)
	defer w.Close()
	l := logrus.New()
	l.SetLevel(logrus.TraceLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	l.SetOutput(nopWriter{})
	l.AddHook(NewHook(w))
	for _, tc := range []struct {
		level logrus.Level
		pri   string
	}{
		{logrus.ErrorLevel, "<11>"},
		{logrus.WarnLevel, "<12>"},
		{logrus.InfoLevel, "<14>"},
		{logrus.DebugLevel, "<15>"},
		{logrus.TraceLevel, "<15>"},
	} {
		l.Log(tc.level, "m")
		m := receive(t, got)
		require.True(t, strings.HasPrefix(m, tc.pri), "%s: %q", tc.level, m)
		require.True(t, strings.HasSuffix(m, "]: level="+tc.level.String()+" msg=m\n"), "%s: %q", tc.level, m)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestDialFails: without a daemon, Dial says where it looked.
func TestDialFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	_, err := Dial(path, FacilityUser, "kata")
	require.ErrorContains(t, err, "no daemon answers at "+path)
}

// TestAnswers: a datagram or stream listener answers; a missing path, a
// file that is not a socket, a socket nobody listens on and a stream
// listener whose backlog is full do not, and none of them blocks.
func TestAnswers(t *testing.T) {
	dir := t.TempDir()
	gram, _ := listen(t, "unixgram")
	stream, _ := listen(t, "unix")
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	stale := filepath.Join(dir, "stale")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	l.Close()
	// A syslog daemon that went away leaves its socket file behind.
	staleGram := filepath.Join(dir, "stale-datagram")
	gone, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: staleGram, Net: "unixgram"})
	require.NoError(t, err)
	require.NoError(t, gone.Close())
	st, err := os.Stat(staleGram)
	require.NoError(t, err, "a closed datagram socket keeps its file")
	require.NotZero(t, st.Mode()&os.ModeSocket)
	full := filepath.Join(dir, "full")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrUnix{Name: full}))
	require.NoError(t, unix.Listen(lfd, 0))
	// A backlog of 0 holds one connection that is never accepted.
	pending, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(pending)
	require.NoError(t, unix.Connect(pending, &unix.SockaddrUnix{Name: full}))
	for _, tc := range []struct {
		name string
		path string
		want bool
	}{
		{"datagram listener", gram, true},
		{"stream listener", stream, true},
		{"missing", filepath.Join(dir, "missing"), false},
		{"regular file", file, false},
		{"stale socket", stale, false},
		{"stale datagram socket", staleGram, false},
		{"stream listener with a full backlog", full, false},
	} {
		require.Equal(t, tc.want, Answers(tc.path), tc.name)
	}
}
