package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/katalaunch"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// startRuntimeRS starts kata-virtiofsd for c as runtime-rs 4.1.0 starts
// virtio_fs_daemon: its argv with the default virtio_fs_extra_args
// (-o announce_submounts) plus the cell's --guard-* options as an operator
// would add them, the socket created by the daemon at socket, the share at
// <root>/sandboxes/<id>/ro, its ready line awaited on piped stderr. Every
// stderr line goes to daemonLog; the cleanup is runtime-rs's SIGKILL, then
// any process the daemon left (the sandboxed children of the C daemon and
// of ours).
func startRuntimeRS(t *testing.T, env *harness.Env, c cell, dir string, share *hostShare, socket, daemonLog string) runningDaemon {
	t.Helper()
	logf, err := os.Create(daemonLog)
	require.NoError(t, err)
	t.Cleanup(func() { logf.Close() })
	guard := harness.DaemonSpec{Protection: c.Protection, Upstream: env.Upstream[c.Daemon], StateDir: filepath.Join(dir, "state")}.ExtraArgs()
	cfg := katalaunch.RuntimeRS{
		Daemon:     env.KataVirtiofsd,
		SharedRoot: filepath.Dir(filepath.Dir(share.Dir)), SandboxID: share.SandboxID,
		Socket: socket, Cache: "auto",
		ExtraArgs: append(append([]string{}, katalaunch.RuntimeRSDefaultExtraArgs...), guard...),
		// runtime-rs's default (DEFDISABLEGUESTSELINUX): no --xattr.
		DisableGuestSELinux: true,
		Log:                 logf, Stdout: logf,
	}
	d, err := katalaunch.StartRuntimeRS(context.Background(), cfg, 30*time.Second)
	if err != nil {
		b, _ := os.ReadFile(daemonLog)
		t.Fatalf("runtime-rs start: %v\ndaemon log:\n%s", err, b)
	}
	t.Logf("daemon (as runtime-rs): %s %s", d.Path, strings.Join(d.Args, " "))
	pid := d.Pid()
	t.Cleanup(func() {
		kids := testutil.Children(pid)
		require.NoError(t, d.Kill())
		for _, k := range kids {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	})
	return d
}
