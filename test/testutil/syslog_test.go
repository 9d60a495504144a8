package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The test binary, run under a /dev made by wrapDev, plays the test on a
// host whose /dev/log is as hostDevLogEnv says.
const (
	hostDevLogEnv  = "KSG_TESTUTIL_HOST_DEVLOG"
	hostTargetEnv  = "KSG_TESTUTIL_HOST_DEVLOG_TARGET"
	tokenEnv       = "KSG_TESTUTIL_SYSLOG_TOKEN"
	stillHostToken = "still the host's /dev/log"
)

// TestPrivateSyslog runs PrivateSyslog on hosts whose /dev/log is each kind
// a machine has: the host is simulated by a private /dev around a second
// run of this test binary, so the real host's /dev/log is never touched.
// In each, a real syslog client (util-linux's logger, which fails if nothing
// answers) must reach the test's listener under PrivateSyslog and fail under
// NoSyslog, the rest of /dev must be the host's, and the host's /dev/log
// must stay as it was and get nothing.
func TestPrivateSyslog(t *testing.T) {
	if mode := os.Getenv(hostDevLogEnv); mode != "" {
		onSimulatedHost(t, mode)
		return
	}
	RequiresRoot(t)
	RequiresCommand(t, "logger")
	for _, tc := range []struct {
		name   string
		mode   devLogMode
		listen bool // a syslog daemon answers at the host's socket
		kind   string
	}{
		{"host without /dev/log (CI containers)", devLogNone, false, "none"},
		{"host with a syslog socket at /dev/log", devLogBind, true, "socket"},
		{"host with journald's symlink /dev/log -> /run/systemd/journal/dev-log", devLogSymlink, true, "symlink"},
		{"host with a stale /dev/log: a stopped daemon's socket", devLogBind, false, "socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "ksg-host-")
			require.NoError(t, err)
			t.Cleanup(func() { os.RemoveAll(dir) })
			hostSock := filepath.Join(dir, "dev-log")
			var host *Syslog
			if tc.mode != devLogNone {
				host, err = ListenSyslog(hostSock, nil)
				require.NoError(t, err)
				t.Cleanup(func() { host.Close() })
				if !tc.listen {
					// Closed, the socket file left behind.
					require.NoError(t, host.conn.Close())
					<-host.done
				}
			}
			token := fmt.Sprintf("ksg-test-%d", time.Now().UnixNano())
			cmd := exec.Command(os.Args[0], "-test.run=^TestPrivateSyslog$", "-test.v")
			cmd.Env = append(os.Environ(), hostDevLogEnv+"="+tc.kind, hostTargetEnv+"="+hostSock, tokenEnv+"="+token)
			require.NoError(t, wrapDev(cmd, dir, tc.mode, hostSock))
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "on the simulated host:\n%s", out)
			require.Contains(t, string(out), "--- PASS: TestPrivateSyslog", "the simulated host ran the test:\n%s", out)
			if host == nil || !tc.listen {
				return
			}
			// The host's daemon got only what was sent past the helper.
			msgs := host.Messages()
			require.Equal(t, []string{stillHostToken}, msgs)
		})
	}
}

// onSimulatedHost is TestPrivateSyslog on a host whose /dev/log is kind.
func onSimulatedHost(t *testing.T, kind string) {
	target, token := os.Getenv(hostTargetEnv), os.Getenv(tokenEnv)
	before, beforeErr := os.Lstat("/dev/log")
	switch kind {
	case "none":
		require.ErrorIs(t, beforeErr, os.ErrNotExist, "the simulated host has no /dev/log")
	case "socket":
		require.NoError(t, beforeErr)
		require.Equal(t, os.ModeSocket, before.Mode().Type(), "the simulated host's /dev/log is a socket")
	case "symlink":
		require.NoError(t, beforeErr)
		require.Equal(t, os.ModeSymlink, before.Mode().Type())
		got, err := os.Readlink("/dev/log")
		require.NoError(t, err)
		require.Equal(t, target, got)
	default:
		t.Fatalf("unknown host kind %q", kind)
	}

	// The command checks the mirror too: devices, directories, symlinks.
	cmd := exec.Command("sh", "-c", `set -e
logger --socket-errors=on -t ksg-test "$1"
test -c /dev/null; : >/dev/null
test -c /dev/zero; test -d /dev/pts; test -d /dev/shm; test -L /dev/fd
test -S /dev/log
echo "pid $$"`, "sh", token)
	ours := PrivateSyslog(t, cmd)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	// sh exec'd by the helper keeps the process ID the test started.
	require.Equal(t, fmt.Sprintf("pid %d\n", cmd.Process.Pid), string(out))
	msg, err := ours.WaitFor(token, 10*time.Second)
	require.NoError(t, err)
	require.Contains(t, msg, "ksg-test")

	after, afterErr := os.Lstat("/dev/log")
	require.Equal(t, beforeErr, afterErr, "the host's /dev/log is as it was")
	if beforeErr == nil {
		require.True(t, os.SameFile(before, after), "the host's /dev/log is the same file")
		// Still the host's daemon's: the outer test checks that this, and
		// not the token, reached it (when it listens).
		if c, err := net.Dial("unixgram", "/dev/log"); err == nil {
			_, err = c.Write([]byte(stillHostToken))
			require.NoError(t, err)
			c.Close()
		}
	}
	require.NotContains(t, ours.String(), stillHostToken)

	// NoSyslog: no /dev/log at all, so a syslog client fails, and the
	// host's daemon (if it listens) gets nothing.
	none := exec.Command("sh", "-c", `set -e
test -c /dev/null; test ! -e /dev/log; test ! -L /dev/log
if logger --socket-errors=on -t ksg-test "$1"; then echo logged; else echo "logger failed"; fi`, "sh", token)
	NoSyslog(t, none)
	out, err = none.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "logger failed")
	require.Contains(t, string(out), "/dev/log", "logger names the socket it could not reach")
}

// TestWrapKeepsTheCommand checks what Wrap promises to keep of cmd.
func TestWrapKeepsTheCommand(t *testing.T) {
	RequiresRoot(t)
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	cmd := exec.Command(cat, "/proc/self/cmdline", "-")
	cmd.Args[0] = "my-argv0"
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"KSG_ONLY=1"}
	cmd.Stdin = strings.NewReader("stdin\n")
	PrivateSyslog(t, cmd)
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Equal(t, "my-argv0\x00/proc/self/cmdline\x00-\x00stdin\n", string(out))

	pwd := exec.Command("sh", "-c", `pwd; echo "$KSG_ONLY"`)
	pwd.Dir = cmd.Dir
	pwd.Env = cmd.Env
	PrivateSyslog(t, pwd)
	out, err = pwd.Output()
	require.NoError(t, err)
	require.Equal(t, cmd.Dir+"\n1\n", string(out))
}

func TestWrapRefuses(t *testing.T) {
	s := &Syslog{path: "/nonexistent/log"}
	require.ErrorContains(t, s.Wrap(exec.Command("ksg-no-such-program")), "ksg-no-such-program")
	started := exec.Command("true")
	require.NoError(t, started.Run())
	require.ErrorContains(t, s.Wrap(started), "already started")
}
