package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
)

// recoverColumn is protection recover (issue 9): kata-virtiofsd serves the
// share itself with submounts announced. On both kernels the container must
// keep reading its volume, still its own superblock. The daemon's status
// file must count recoveries on the vulnerable kernel (it forgot the
// submount root, and the daemon reinstated it) and none on the fixed one
// (whose submount root keeps the node ID's lookup alive).
func recoverColumn() column {
	return column{
		Protection: ProtectRecover,
		Daemons:    []Daemon{DaemonOurs},
		Expect: func(kernel string) expectation {
			e := expectation{Outcome: guest.OK, Submount: true, Recoveries: "0"}
			if kernel == KernelVulnerable {
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
func checkRecoveries(t *testing.T, c cell, d *daemonProc, stateDir string, share *hostShare, daemonLog string) string {
	t.Helper()
	deadline := time.Now().Add(daemonExitTimeout)
	for {
		if ok, _ := d.exited(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("daemon still running %s after the guest powered off", daemonExitTimeout)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	path := passthroughfs.StatusPath(stateDir, share.SandboxID)
	st, err := passthroughfs.ReadStatus(path)
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
