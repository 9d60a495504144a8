package fsdaemon

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
)

// TestServeStopsOnSIGTERM: SIGTERM to the daemon (what Kata and systemd
// send) ends it cleanly in every sandbox mode, while a front-end is
// connected and before one is: exit status 0 and a final status file that
// says it is no longer running.
func TestServeStopsOnSIGTERM(t *testing.T) {
	for _, mode := range []fssandbox.Mode{fssandbox.ModeNone, fssandbox.ModeChroot, fssandbox.ModeNamespace} {
		for _, connected := range []bool{true, false} {
			name := string(mode) + "/waiting"
			if connected {
				name = string(mode) + "/serving"
			}
			t.Run(name, func(t *testing.T) {
				if mode != fssandbox.ModeNone {
					testutil.RequiresRoot(t)
				}
				const sandbox = "sb-sigterm"
				shared, state, statusPath, sock := kataShare(t, sandbox)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var daemonLog testutil.SyncBuffer
				cmd := exec.CommandContext(ctx, sandboxd(t), "--shared-dir="+shared, "--socket-path="+sock,
					"--sandbox="+string(mode), "--guard-protection=recover", "--guard-state-dir="+state)
				cmd.Stdout, cmd.Stderr = &daemonLog, &daemonLog
				require.NoError(t, cmd.Start())
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()

				if connected {
					s := connect(t, sock)
					defer s.f.Close()
					_, err := s.clients[0].Init(fst.GuestInitFlags)
					require.NoError(t, err)
				}
				require.Eventually(t, func() bool {
					st, err := ReadStatus(statusPath)
					return err == nil && st.Running
				}, 10*time.Second, 10*time.Millisecond, "status file says running")
				if mode != fssandbox.ModeNone {
					// The child has set up its signal handling once it serves.
					require.Eventually(t, func() bool { return len(testutil.Children(cmd.Process.Pid)) > 0 }, 10*time.Second, 10*time.Millisecond)
				}

				require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
				select {
				case err := <-done:
					require.NoError(t, err, "log:\n%s", daemonLog.String())
				case <-time.After(10 * time.Second):
					t.Fatalf("daemon still running 10 s after SIGTERM; log:\n%s", daemonLog.String())
				}
				st, err := ReadStatus(statusPath)
				require.NoError(t, err)
				require.False(t, st.Running, "final status")
				_, err = os.Stat(sock)
				require.True(t, os.IsNotExist(err), "socket left behind")
			})
		}
	}
}
