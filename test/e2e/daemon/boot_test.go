package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
)

// daemons are the three the daemon tests compare, ours first.
var daemons = []harness.Daemon{harness.DaemonOurs, harness.DaemonRust, harness.DaemonC}

// daemonSpec is how an operator configures each daemon behind
// kata-virtiofsd: ours with the given protection and no upstream (recover,
// or none: kata-virtiofsd serves the share itself when no upstream is
// configured), the others as the upstream with protection none. extra are
// further virtio_fs_extra_args, e.g. --xattr.
func daemonSpec(env *harness.Env, d harness.Daemon, ours protection.Protection, stateDir string, extra ...string) harness.DaemonSpec {
	if d == harness.DaemonOurs {
		return harness.DaemonSpec{Extra: extra, Protection: ours, StateDir: stateDir}
	}
	return harness.DaemonSpec{Extra: extra, Protection: protection.None, Upstream: env.Upstream[d], StateDir: stateDir}
}

// workDir is a short temporary directory (a unix socket path must fit in
// 108 bytes) removed when t ends.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ksg-daemon-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	return dir
}

// guestRun is what one boot gave.
type guestRun struct {
	Lines *guest.Lines
	// Exited: the daemon ended by itself once QEMU went away; ExitErr is
	// how.
	Exited  bool
	ExitErr error
	LogPath string // the daemon's output and syslog lines
}

func (r *guestRun) daemonLog() string {
	b, _ := os.ReadFile(r.LogPath)
	return string(b)
}

// vmOptions are what a mode's boot needs beyond the defaults.
type vmOptions struct {
	Mode    guest.Mode
	Params  []string // more kernel command line keys
	Timeout time.Duration
	// OnLine sees each console line while the guest and the daemon run.
	OnLine func(line string, daemon *harness.DaemonProc)
}

// Guest shape of every daemon test (as make bench-daemon has always
// measured): 512 MiB of RAM, request queues of 1024 descriptors.
const (
	guestMemMB     = 512
	guestQueueSize = 1024
	guestTag       = "ksg"
	// daemonExitTimeout: every daemon ends by itself once QEMU hangs up.
	daemonExitTimeout = 10 * time.Second
)

// bootGuest starts d on share through kata-virtiofsd with spec, boots the
// fixed kernel in o.Mode and returns what the guest printed. A guest that
// does not get to its DoneLine fails t with its console and the daemon's
// log; so does a daemon still running after the guest went away.
func bootGuest(t *testing.T, env *harness.Env, dir string, share *harness.Share, d harness.Daemon, spec harness.DaemonSpec, o vmOptions) *guestRun {
	t.Helper()
	args := spec.Args(share.Dir)
	socket := filepath.Join(dir, "vhost.sock")
	r := &guestRun{LogPath: filepath.Join(dir, "daemon.log")}
	proc, err := harness.StartDaemon(env.KataVirtiofsd, args, dir, socket, r.LogPath)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, proc.Stop()) })
	t.Logf("%s: %s %s", d, env.KataVirtiofsd, strings.Join(args, " "))

	var onLine func(string)
	if o.OnLine != nil {
		onLine = func(line string) { o.OnLine(line, proc) }
	}
	console, err := harness.Run(context.Background(), harness.VM{
		QEMU: env.QEMU, Kernel: env.BzImage(harness.KernelFixed), Initrd: env.Initrd,
		Socket: socket, Tag: guestTag, Console: filepath.Join(dir, "console.log"),
		MemMB: guestMemMB, QueueSize: guestQueueSize, Timeout: o.Timeout, OnLine: onLine,
		Append: append([]string{"quiet", guest.KeyMode + "=" + string(o.Mode), guest.KeyTag + "=" + guestTag}, o.Params...),
	})
	r.Exited, r.ExitErr = proc.Wait(daemonExitTimeout)
	if !r.Exited {
		t.Errorf("%s still running %s after QEMU exited", d, daemonExitTimeout)
	}
	require.NoError(t, err, "guest against %s; daemon log:\n%s", d, harness.Tail([]byte(r.daemonLog()), 40))
	r.Lines, err = guest.ParseLines(console)
	require.NoError(t, err)
	if !r.Lines.Done {
		t.Fatalf("guest did not finish mode %s against %s; console:\n%s\ndaemon log:\n%s",
			o.Mode, d, harness.Tail(console, 60), harness.Tail([]byte(r.daemonLog()), 40))
	}
	return r
}

// requireChecksOK asserts that the guest's named checks all passed.
func requireChecksOK(t *testing.T, d harness.Daemon, r *guestRun, names ...string) {
	t.Helper()
	for _, name := range names {
		require.Equal(t, guest.CheckOK, r.Lines.Checks[name], "guest check %s against %s", name, d)
	}
	for name, status := range r.Lines.Checks {
		if status != guest.CheckOK {
			t.Errorf("guest check %s against %s: %s", name, d, status)
		}
	}
}

// label names a daemon in tables.
func label(d harness.Daemon) string {
	switch d {
	case harness.DaemonOurs:
		return "ours (kata-virtiofsd)"
	case harness.DaemonRust:
		return "Rust virtiofsd 1.13.2"
	case harness.DaemonC:
		return "C virtiofsd (QEMU 7.2)"
	}
	return fmt.Sprint(d)
}
