package katalaunch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

const cDaemonPath = "/usr/lib/qemu/virtiofsd"

// readyTimeout stands in for runtime-rs's endless wait.
const readyTimeout = 20 * time.Second

// upstreams are the daemons kata-virtiofsd may exec.
func upstreams(t *testing.T) map[string]string {
	t.Helper()
	_, err := os.Stat(cDaemonPath)
	testutil.Require(t, err == nil, cDaemonPath+" missing (qemu-system-common, test/setup/10-apt.sh)")
	return map[string]string{"rust": testutil.RequiresCacheFile(t, "bin/virtiofsd-rust"), "c": cDaemonPath}
}

// rsConfig is a runtime-rs configuration for kata-virtiofsd under a
// temporary root; extra follows runtime-rs's default virtio_fs_extra_args.
func rsConfig(t *testing.T, daemon string, extra ...string) (RuntimeRS, *testutil.SyncBuffer) {
	// Short: a unix socket path must fit in 108 bytes.
	root, err := os.MkdirTemp("", "ksg-rs-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	jail := filepath.Join(root, "vm")
	require.NoError(t, os.Mkdir(jail, 0o750))
	log := &testutil.SyncBuffer{}
	return RuntimeRS{
		Daemon: daemon, SharedRoot: filepath.Join(root, "sandboxes"), SandboxID: "rs-sandbox",
		Socket: filepath.Join(jail, "virtiofsd.sock"), Cache: "auto",
		ExtraArgs: append(append([]string{}, RuntimeRSDefaultExtraArgs...), append(extra, "--guard-state-dir="+filepath.Join(root, "state"))...),
		Log:       log,
	}, log
}

func cmdline(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}

// TestRuntimeRSStartsKataVirtiofsd starts kata-virtiofsd exactly as
// runtime-rs 4.1.0 starts virtio_fs_daemon (through a symlink, which
// runtime-rs canonicalizes), in each of its modes: it must print the ready
// line runtime-rs waits for, serve a vhost-user front-end on the socket
// runtime-rs named, in the process runtime-rs will SIGKILL, with the
// protection's arguments.
func TestRuntimeRSStartsKataVirtiofsd(t *testing.T) {
	testutil.RequiresRoot(t)
	kv := testutil.BuildCommand(t, "kata-virtiofsd")
	link := filepath.Join(t.TempDir(), "virtiofsd")
	require.NoError(t, os.Symlink(kv, link))
	up := upstreams(t)

	cases := []struct {
		name     string
		extra    []string
		rootless bool
		// argv checks of the process that serves, while connected.
		want, notWant []string
	}{
		{name: "ours, recover", extra: []string{"--guard-protection=recover"},
			want: []string{kv, "--socket-path"}},
		{name: "ours, recover, rootless", extra: []string{"--guard-protection=recover"}, rootless: true,
			want: []string{kv, "--socket-path virtiofsd.sock"}},
		{name: "rust, none", extra: []string{"--guard-protection=none", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=", "--shared-dir", "-o announce_submounts --xattr"}, notWant: []string{"--socket-path", "--guard-"}},
		{name: "rust, no-submounts", extra: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=", "--xattr --no-announce-submounts"}, notWant: []string{"announce_submounts", "--socket-path"}},
		// Rust logs nothing at this level: the ready line is ours.
		{name: "rust, none, log level off", extra: []string{"--log-level=off", "--guard-protection=none", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=", "--log-level=off"}},
		{name: "rust, no-submounts, rootless", extra: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["rust"]}, rootless: true,
			want: []string{"--fd=", "--no-announce-submounts"}, notWant: []string{"announce_submounts"}},
		{name: "c, none", extra: []string{"--guard-protection=none", "--guard-upstream=" + up["c"]},
			want: []string{cDaemonPath, "--fd=", "-o xattr -o announce_submounts"}, notWant: []string{"--socket-path", "--shared-dir"}},
		{name: "c, no-submounts", extra: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["c"]},
			want: []string{cDaemonPath, "--fd=", "-o xattr"}, notWant: []string{"announce_submounts"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, log := rsConfig(t, link, tc.extra...)
			cfg.Rootless = tc.rootless
			d, err := StartRuntimeRS(context.Background(), cfg, readyTimeout)
			require.NoError(t, err, "runtime-rs log:\n%s", log)
			t.Cleanup(func() { require.NoError(t, d.Kill()) })
			require.Equal(t, kv, d.Path, "runtime-rs runs the symlink's target")
			require.Contains(t, log.String(), "source: virtiofsd kata-virtiofsd: Waiting for vhost-user socket connection... ("+d.Args[1]+")")
			if !strings.Contains(strings.Join(tc.extra, " "), "--log-level=off") {
				require.Contains(t, log.String(), "sandbox=rs-sandbox", "the sandbox id from the /ro layout")
			}

			dev, err := vut.DialFS(cfg.Socket, 10*time.Second)
			require.NoError(t, err, "runtime-rs log:\n%s", log)
			argv := cmdline(t, d.Pid())
			dev.Close()
			for _, w := range tc.want {
				require.Contains(t, argv, w)
			}
			for _, w := range tc.notWant {
				require.NotContains(t, argv, w)
			}
			exited, _ := d.Exited()
			if strings.HasPrefix(tc.name, "ours") || strings.HasPrefix(tc.name, "rust") {
				require.False(t, exited, "the daemon runs until runtime-rs kills it; log:\n%s", log)
			}
		})
	}
}

// TestRuntimeRSRefusal: a share kata-virtiofsd refuses ends the process
// without the ready line and leaves no socket, so runtime-rs's start fails
// instead of booting the VM against nothing.
func TestRuntimeRSRefusal(t *testing.T) {
	testutil.RequiresRoot(t)
	kv := testutil.BuildCommand(t, "kata-virtiofsd")
	for _, tc := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"own daemon cannot honour an option", []string{"--writeback", "--guard-protection=recover"}, "cannot honour --writeback"},
		{"no plan and --guard-no-plan=fail", []string{"--guard-no-plan=fail"}, "no plan for sandbox rs-sandbox"},
		{"upstream refuses an option", []string{"--tag=x", "--guard-protection=none", "--guard-upstream=" + cDaemonPath}, "cannot honour --tag=x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, log := rsConfig(t, kv, tc.extra...)
			start := time.Now()
			_, err := StartRuntimeRS(context.Background(), cfg, readyTimeout)
			require.ErrorIs(t, err, ErrNoReadyLine, "log:\n%s", log)
			require.ErrorContains(t, err, "exit status 1")
			require.Less(t, time.Since(start), 10*time.Second)
			require.Contains(t, log.String(), tc.want)
			require.NotContains(t, log.String(), runtimeRSReady)
			_, err = os.Lstat(cfg.Socket)
			require.True(t, errors.Is(err, os.ErrNotExist), "no socket left: %v", err)
		})
	}
}

// The hazard the ready line removes: the Rust virtiofsd started by
// runtime-rs with a log level above info never prints the line, and
// runtime-rs would wait for ever.
func TestRuntimeRSHangsOnQuietRustVirtiofsd(t *testing.T) {
	testutil.RequiresRoot(t)
	rust := upstreams(t)["rust"]
	cfg, log := rsConfig(t, rust)
	cfg.ExtraArgs = append(append([]string{}, RuntimeRSDefaultExtraArgs...), "--log-level=error")
	_, err := StartRuntimeRS(context.Background(), cfg, 3*time.Second)
	require.ErrorIs(t, err, ErrReadyTimeout, "log:\n%s", log)

	cfg, log = rsConfig(t, rust)
	cfg.ExtraArgs = RuntimeRSDefaultExtraArgs
	d, err := StartRuntimeRS(context.Background(), cfg, readyTimeout)
	require.NoError(t, err, "at the default level it prints the line itself; log:\n%s", log)
	require.NoError(t, d.Kill())
}
