package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/posix"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// escapeMarker is a file beside the shared dir on the host (in
// <root>/sandboxes/<id>/, with other sandboxes' files on a real host); the
// suite's escape checks must not reach it from the guest.
const (
	escapeMarker        = "ksg-escape-marker"
	escapeMarkerContent = "host only"
)

// escapeChecks try to leave the share: ".." at its root, symlinks to / and
// out of it, renames and links across its root. Each must pass (every
// attempt fails) against every daemon.
var escapeChecks = []string{"escape_dotdot", "escape_symlink", "escape_rename"}

// rustDeviation is a check the reference itself does not pass: what it
// gives instead, a piece of its message, and why.
type rustDeviation struct {
	Outcome guest.POSIXOutcome
	Detail  string
	Why     string
}

// rustDeviations: where the Rust virtiofsd does not pass, ours must still
// pass (every check does), and the Rust virtiofsd must give exactly the
// recorded result: the difference is asserted, never skipped, and an entry
// that stops being true fails the test.
var rustDeviations = map[string]rustDeviation{
	"tmpfile": {
		Outcome: guest.POSIXSkip,
		Detail:  "O_TMPFILE not supported by the target filesystem",
		Why: "Rust virtiofsd 1.13.2 answers FUSE_TMPFILE (opcode 51) with ENOSYS (its debug log: " +
			"`opcode=TmpFile (51)` -> `error: -38`); the guest's fuse_tmpfile then fails open(O_TMPFILE) " +
			"with EOPNOTSUPP, which the check reports as a skip. Our daemon serves TMPFILE (passthroughfs Tmpfile)",
	},
}

// TestDaemonPOSIX runs the POSIX suite (test/posix) inside a guest against
// the virtio-fs share served by each daemon, started through kata-virtiofsd
// with Kata's argv plus --xattr (our daemon with protection recover, the
// Rust and C virtiofsd as upstreams with protection none). It asserts that
// every check passes on ours, that ours gives the Rust virtiofsd's result
// for every check, that the escape checks pass on all three (every escape
// attempt fails) and that nothing beside the share changed on the host. It
// prints the check × daemon table (and writes it to $KSG_E2E_POSIX_TABLE).
func TestDaemonPOSIX(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	env := harness.NewEnv(t, harness.WithPOSIXSuite())
	var checks []string
	for _, c := range posix.Checks() {
		checks = append(checks, c.Name)
	}

	var mu sync.Mutex
	results := map[harness.Daemon]map[string]guest.POSIXResult{}
	elapsed := map[harness.Daemon]time.Duration{}
	t.Run("guests", func(t *testing.T) {
		for _, d := range daemons {
			t.Run(string(d), func(t *testing.T) {
				start := time.Now()
				got := runPOSIXGuest(t, env, d, checks)
				mu.Lock()
				results[d], elapsed[d] = got, time.Since(start)
				mu.Unlock()
			})
		}
	})
	table := posixTable(checks, results, elapsed)
	fmt.Print(table)
	if p := os.Getenv("KSG_E2E_POSIX_TABLE"); p != "" {
		require.NoError(t, os.WriteFile(p, []byte(table), 0o644))
	}
	ours, rust := results[harness.DaemonOurs], results[harness.DaemonRust]
	require.NotNil(t, ours, "no results from our daemon")
	require.NotNil(t, rust, "no results from the Rust virtiofsd")

	t.Run("ours passes every check", func(t *testing.T) {
		for _, c := range checks {
			if ours[c].Outcome != guest.POSIXPass {
				t.Errorf("%s: %s against our daemon: %s", c, ours[c].Outcome, ours[c].Detail)
			}
		}
	})
	t.Run("ours as Rust", func(t *testing.T) {
		for _, c := range checks {
			dev, known := rustDeviations[c]
			switch {
			case !known:
				if ours[c].Outcome != rust[c].Outcome {
					t.Errorf("%s: ours %s, Rust %s (ours: %s; Rust: %s)", c, ours[c].Outcome, rust[c].Outcome, ours[c].Detail, rust[c].Detail)
				}
			case rust[c].Outcome != dev.Outcome || !strings.Contains(rust[c].Detail, dev.Detail):
				t.Errorf("%s: Rust gives %s (%s), recorded as %s (%q) because %s: update rustDeviations",
					c, rust[c].Outcome, rust[c].Detail, dev.Outcome, dev.Detail, dev.Why)
			default:
				t.Logf("%s: Rust %s as recorded (%s); ours %s", c, rust[c].Outcome, dev.Why, ours[c].Outcome)
			}
		}
		for c := range rustDeviations {
			require.Contains(t, checks, c, "rustDeviations names a check the suite does not have")
		}
	})
}

// runPOSIXGuest boots one guest running the suite against d and returns
// its result per check, after asserting what must hold for every daemon.
func runPOSIXGuest(t *testing.T, env *harness.Env, d harness.Daemon, checks []string) map[string]guest.POSIXResult {
	dir := workDir(t)
	// A plain directory (ext4 here), as the host suite's reference and the
	// container rootfs and volumes Kata shares.
	share, err := harness.NewShare(dir, "sb", "")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, share.Close()) })
	require.NoError(t, os.WriteFile(filepath.Join(share.Outside(), escapeMarker), []byte(escapeMarkerContent), 0o644))

	spec := daemonSpec(env, d, protection.Recover, filepath.Join(dir, "state"), "--xattr")
	r := bootGuest(t, env, dir, share, d, spec, vmOptions{
		Mode:    guest.ModePOSIX,
		Params:  []string{guest.KeyPOSIXXattr + "=1", guest.KeyPOSIXEscapeMarker + "=" + escapeMarker},
		Timeout: 30 * time.Minute,
	})
	requireChecksOK(t, d, r, "mount")
	if d == harness.DaemonOurs {
		require.Contains(t, r.daemonLog(), "serving the share with kata-virtiofsd's own daemon")
	} else {
		require.Contains(t, r.daemonLog(), "starting upstream virtiofsd")
	}

	got := map[string]guest.POSIXResult{}
	for _, res := range r.Lines.POSIX {
		_, dup := got[res.Check]
		require.False(t, dup, "check %s reported twice", res.Check)
		got[res.Check] = res
		t.Logf("%s: %s (%d ms) %s", res.Check, res.Outcome, res.MS, res.Detail)
	}
	for _, c := range checks {
		require.Contains(t, got, c, "the guest did not report check %s", c)
	}
	require.Len(t, got, len(checks), "the guest reported checks the suite does not have")

	// Escape attempts fail against every daemon: the escape checks pass.
	for _, c := range escapeChecks {
		require.Contains(t, checks, c, "the suite lost an escape check")
		require.Equal(t, guest.POSIXPass, got[c].Outcome, "%s against %s: %s", c, d, got[c].Detail)
	}
	// And nothing beside the share was created or changed on the host.
	ents, err := os.ReadDir(share.Outside())
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{filepath.Base(share.Dir), escapeMarker}, names, "host files beside the share")
	b, err := os.ReadFile(filepath.Join(share.Outside(), escapeMarker))
	require.NoError(t, err)
	require.Equal(t, escapeMarkerContent, string(b))
	return got
}

// posixTable is the check × daemon table, with the message of every check
// that did not pass below it.
func posixTable(checks []string, results map[harness.Daemon]map[string]guest.POSIXResult, elapsed map[harness.Daemon]time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nPOSIX suite (test/posix) in a TCG guest (6.1 fixed kernel) against the virtio-fs share, per daemon through kata-virtiofsd (built from the tree) with Kata's argv + --xattr\n")
	fmt.Fprintf(&b, "| check |")
	for _, d := range daemons {
		fmt.Fprintf(&b, " %s |", label(d))
	}
	fmt.Fprintf(&b, "\n|---|")
	for range daemons {
		fmt.Fprintf(&b, "---|")
	}
	var notes []string
	for _, c := range checks {
		fmt.Fprintf(&b, "\n| %s |", c)
		for _, d := range daemons {
			res, ok := results[d][c]
			switch {
			case !ok:
				fmt.Fprintf(&b, " - |")
			case res.Outcome == guest.POSIXPass:
				fmt.Fprintf(&b, " pass |")
			default:
				fmt.Fprintf(&b, " **%s** |", res.Outcome)
				note := fmt.Sprintf("- %s, %s: %s", c, d, res.Detail)
				if dev, ok := rustDeviations[c]; ok && d == harness.DaemonRust {
					note += ". Why: " + dev.Why
				}
				notes = append(notes, note)
			}
		}
	}
	fmt.Fprintf(&b, "\n| guest time |")
	for _, d := range daemons {
		fmt.Fprintf(&b, " %s |", elapsed[d].Round(time.Second))
	}
	b.WriteString("\n")
	if notes != nil {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}
