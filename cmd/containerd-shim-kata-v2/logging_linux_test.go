package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

const syslogHelperEnv = "KSG_SHIM_SYSLOG_HELPER"

// TestLogSinks: an entry reaches the bundle's log FIFO and syslog (tag kata)
// with Kata's fields, and nothing reaches stdout or stderr. Syslog is a
// socket we serve in a private mount namespace, so the host's syslog is
// neither needed nor touched.
func TestLogSinks(t *testing.T) {
	testutil.RequiresRoot(t)
	unshare := testutil.RequiresCommand(t, "unshare")
	out := filepath.Join(t.TempDir(), "result")
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestLogSinksHelper$", "-test.v")
	cmd.Env = append(os.Environ(), syslogHelperEnv+"="+out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, string(b))
	got, err := os.ReadFile(out)
	require.NoError(t, err, string(b))
	parts := strings.SplitN(string(got), "\x00", 2)
	require.Len(t, parts, 2)
	fifoLine, syslogLine := parts[0], parts[1]

	for _, line := range []string{fifoLine, syslogLine} {
		for _, want := range []string{"level=warning", `msg="kernel warning"`, "source=containerd-kata-shim-v2", "name=containerd-shim-v2", "sandbox=sb1", "verdict=vulnerable"} {
			require.Contains(t, line, want)
		}
	}
	// <12>: facility user, severity warning; then the tag.
	require.True(t, strings.HasPrefix(syslogLine, "<12>"), syslogLine)
	require.Contains(t, syslogLine, " kata[")
	require.NotContains(t, string(b), "kernel warning", "a log line reached stdout or stderr")
}

func TestLogSinksHelper(t *testing.T) {
	out := os.Getenv(syslogHelperEnv)
	if out == "" {
		t.Skip("helper process of TestLogSinks")
	}
	// A private /run holds our syslog socket; Go's log/syslog tries
	// /dev/log first, so cover it too when the host has one.
	require.NoError(t, unix.Mount("tmpfs", "/run", "tmpfs", 0, ""))
	sock := "/run/syslog"
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()
	if _, err := os.Stat("/dev/log"); err == nil {
		require.NoError(t, unix.Mount(sock, "/dev/log", "", unix.MS_BIND, ""))
	}

	dir := t.TempDir()
	fifo := filepath.Join(dir, "log")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	// containerd holds the FIFO open read-write; so do we.
	reader, err := os.OpenFile(fifo, os.O_RDWR, 0)
	require.NoError(t, err)
	defer reader.Close()

	logger, sinks := newLogger(false, fifo)
	logger.WithField("sandbox", "sb1").WithField("verdict", "vulnerable").Warn("kernel warning")
	sinks.Close()

	buf := make([]byte, 64<<10)
	require.NoError(t, reader.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := reader.Read(buf)
	require.NoError(t, err)
	fifoLine := string(buf[:n])
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err = conn.Read(buf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(out, []byte(fifoLine+"\x00"+string(buf[:n])), 0o644))
}

// TestLoggerWithoutSinks: no FIFO reader and no syslog is not an error and
// opens nothing that blocks.
func TestLoggerWithoutSinks(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "log")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	for _, path := range []string{"", filepath.Join(dir, "missing"), fifo} {
		logger, sinks := newLogger(true, path)
		done := make(chan struct{})
		go func() {
			logger.Warn("nobody reads this")
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("logging blocked with FIFO %q", path)
		}
		sinks.Close()
	}
}
