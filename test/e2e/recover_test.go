package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsdaemon"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
)

// recoverColumn is protection recover (issue 9): kata-virtiofsd serves the
// share itself with submounts announced. On both kernels the container must
// keep reading its volume, still its own superblock. The daemon's status
// file must count recoveries on the vulnerable kernel (it forgot the
// submount root, and the daemon reinstated it) and none on the fixed one
// (whose submount root keeps the node ID's lookup alive).
func recoverColumn() column {
	return column{
		Protection: protection.Recover,
		Daemons:    []harness.Daemon{harness.DaemonOurs},
		Expect: func(kernel string) expectation {
			e := expectation{Outcome: guest.OK, Submount: true, Recoveries: "0"}
			if kernel == harness.KernelVulnerable {
				e.Recoveries = "≥1"
			}
			return e
		},
	}
}

// daemonExitTimeout: the daemon ends by itself once QEMU hangs up.
const daemonExitTimeout = 30 * time.Second

// checkRecoveries asserts a recover cell's counters once the guest is done:
// the status file at <state>/status/<sandbox>.json, final (the daemon ended
// with the VM), and the daemon's log, which names each recovery once. It
// returns the summary for the table.
func checkRecoveries(t *testing.T, c cell, d runningDaemon, stateDir string, share *hostShare, daemonLog string) string {
	t.Helper()
	deadline := time.Now().Add(daemonExitTimeout)
	for {
		if ok, _ := d.Exited(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("daemon still running %s after the guest powered off", daemonExitTimeout)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	path := statedir.StatusPath(stateDir, share.SandboxID)
	st, err := fsdaemon.ReadStatus(path)
	if err != nil {
		t.Errorf("recovery status: %v", err)
		return "; no status file"
	}
	summary := fmt.Sprintf("; %d recoveries (%d forgotten, %d looked up again)", st.Recoveries, st.Forgotten, st.Relooked)
	if st.Running {
		t.Errorf("status %s still says running after the daemon ended", path)
	}
	switch c.Expect.Recoveries {
	case "0":
		if st.Recoveries != 0 {
			t.Errorf("%d recoveries counted, want none: this kernel never uses a forgotten node ID", st.Recoveries)
		}
	case "≥1":
		if st.Recoveries == 0 {
			t.Errorf("no recovery counted: the guest's volume stayed readable without one? (forgotten %d)", st.Forgotten)
		}
	default:
		t.Errorf("cell expects %q recoveries", c.Expect.Recoveries)
	}
	if st.Stale != 0 || st.Evicted != 0 {
		t.Errorf("status counts %d stale and %d evicted roots; the host share did not change", st.Stale, st.Evicted)
	}

	b, err := os.ReadFile(daemonLog)
	if err != nil {
		t.Errorf("daemon log: %v", err)
		return summary
	}
	var logged, totals int
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "reinstated it"):
			logged++
			for _, want := range []string{"sandbox=" + share.SandboxID, "nodeid=", "path=/" + share.Volume} {
				if !strings.Contains(line, want) {
					t.Errorf("recovery log line lacks %q: %s", want, line)
				}
			}
		case strings.Contains(line, "totals at exit"):
			totals++
			if want := fmt.Sprintf("recoveries=%d ", st.Recoveries); !strings.Contains(line+" ", want) {
				t.Errorf("exit totals disagree with the status file (%s): %s", want, line)
			}
		}
	}
	if uint64(logged) != st.Recoveries {
		t.Errorf("%d recoveries logged, status file counts %d", logged, st.Recoveries)
	}
	if totals != 1 {
		t.Errorf("%d exit totals lines in the daemon log, want 1", totals)
	}
	return summary
}

// TestRecoverFromPlan boots each guest kernel with the daemon its sandbox's
// plan chooses, as the shim decides it (policy.Decide inspects the real
// kernel under a Kata configuration with virtiofs_protection = "recover"),
// and kata-virtiofsd started with Kata's argv plus --guard-state-dir only:
// the vulnerable kernel gets our daemon, which recovers its volume; the
// fixed one needs no protection and gets the upstream Rust virtiofsd with
// submounts. (TestRecoverThroughThePlan in test/integration shows containerd
// and the shim writing such a plan.)
func TestRecoverFromPlan(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	env := harness.NewEnv(t)
	for _, k := range []string{harness.KernelVulnerable, harness.KernelFixed} {
		t.Run(k, func(t *testing.T) {
			dir, share := newCellDir(t)
			state := filepath.Join(dir, "state")

			cfgPath := filepath.Join(dir, "configuration.toml")
			q := strconv.Quote
			require.NoError(t, os.WriteFile(cfgPath, []byte(`[hypervisor.qemu]
path = `+q(env.QEMU)+`
kernel = `+q(env.BzImage(k))+`
shared_fs = "virtio-fs"
virtio_fs_daemon = `+q(env.KataVirtiofsd)+`
valid_virtio_fs_daemon_paths = [`+q(env.KataVirtiofsd)+`]

[submount_guard]
on_vulnerable = "warn"
on_unknown = "warn"
virtiofs_protection = "recover"
upstream_virtiofsd = `+q(env.Upstream[harness.DaemonRust])+`
state_dir = `+q(state)+`
`), 0o644))
			ctx := context.Background()
			r, err := config.Resolve(ctx, config.Sources{ExplicitPath: cfgPath})
			require.NoError(t, err)
			pl, err := policy.Decide(ctx, policy.Input{Resolved: r, SandboxID: share.SandboxID, ContainerType: policy.PodSandbox, Inspector: policy.InspectorFunc(guestkernel.Inspect)})
			require.NoError(t, err)
			require.NoError(t, plan.Write(state, pl))
			c := cell{Kernel: k, Protection: protection.Recover, Daemon: harness.DaemonOurs, Scenario: guest.BindDetach, Pressure: guest.Memory,
				Expect: recoverColumn().Expect(k)}
			if k == harness.KernelFixed {
				require.Equal(t, protection.None, pl.Protection, pl.Reason)
				c.Protection, c.Daemon, c.Expect = protection.None, harness.DaemonRust, expectation{Outcome: guest.OK, Submount: true}
			} else {
				require.Equal(t, protection.Recover, pl.Protection, pl.Reason)
			}

			var observed string
			bootCell(t, env, c, dir, share, harness.DaemonSpec{StateDir: state}.Args(share.Dir), &observed)
			t.Logf("%s kernel, plan protection %s: %s", k, pl.Protection, observed)

			dlog, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
			require.Contains(t, string(dlog), "protection_from=plan", "the plan chose the protection")
			if k == harness.KernelFixed {
				require.Contains(t, string(dlog), "starting upstream virtiofsd")
				require.NoFileExists(t, statedir.StatusPath(state, share.SandboxID))
			} else {
				require.Contains(t, string(dlog), "serving the share with kata-virtiofsd's own daemon")
			}
		})
	}
}
