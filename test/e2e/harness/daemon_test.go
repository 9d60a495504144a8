package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

func TestDaemonSpecKeepsKataArgv(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec DaemonSpec
		want []string
	}{
		{"guard options after Kata's", DaemonSpec{Protection: protection.NoSubmounts, Upstream: "/up", StateDir: "/st"}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--guard-protection=no-submounts", "--guard-upstream=/up", "--guard-state-dir=/st",
		}},
		{"extra virtiofsd options before ours", DaemonSpec{Extra: []string{"--xattr"}, Protection: protection.Recover}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--xattr", "--guard-protection=recover",
		}},
		{"state dir only: the plan decides", DaemonSpec{StateDir: "/st"}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--guard-state-dir=/st",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.spec.Args("/s"))
		})
	}
}

// TestStartDaemonLogsSyslog checks the daemon's plumbing without a guest:
// fd 3 is the listening socket, and stdout, stderr and syslog lines all reach
// the log, whether or not this host has a syslog daemon.
func TestStartDaemonLogsSyslog(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "logger")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "daemon.log")
	script := `test -S /proc/self/fd/3 || { echo "fd 3 is not a socket"; exit 1; }
logger --socket-errors=on -t ksg-harness "to syslog"
echo "to stdout"; echo "to stderr" >&2`
	d, err := StartDaemon("/bin/sh", []string{"-c", script}, dir, filepath.Join(dir, "vhost.sock"), logPath)
	require.NoError(t, err)
	exited, err := d.Wait(30 * time.Second)
	require.True(t, exited)
	b, _ := os.ReadFile(logPath)
	require.NoError(t, err, "log:\n%s", b)
	require.NoError(t, d.Stop())
	b, err = os.ReadFile(logPath)
	require.NoError(t, err)
	log := string(b)
	require.Regexp(t, `(?m)^syslog: <\d+>.* ksg-harness(\[\d+\])?: to syslog$`, log)
	require.Contains(t, log, "to stdout\n")
	require.Contains(t, log, "to stderr\n")
}
