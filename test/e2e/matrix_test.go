package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// expectation is what a cell must observe.
type expectation struct {
	Outcome  guest.Outcome
	Submount bool // the volume has its own st_dev in the guest
	// Recoveries is what the recover column's status file must count:
	// "0" or "≥1"; empty for other columns.
	Recoveries string
}

func (e expectation) String() string {
	s := string(e.Outcome) + ", one st_dev"
	if e.Submount {
		s = string(e.Outcome) + ", submount"
	}
	if e.Recoveries != "" {
		s += ", " + e.Recoveries + " recoveries"
	}
	return s
}

// column is one protection and what it promises on each kernel. The recover
// column (our own daemon, issue 9) joins by adding an entry here.
type column struct {
	Protection protection.Protection
	Expect     func(kernel string) expectation
	// Daemons the column runs with; nil: the C and the Rust virtiofsd.
	Daemons []harness.Daemon
}

func matrixColumns() []column {
	return []column{
		// ours/none is the control of the recover column: our own daemon
		// without recovery must fail as the upstream daemons do, so that
		// recovery, and no other difference of our daemon, is what keeps
		// the volume readable.
		{Protection: protection.None, Expect: noneExpect,
			Daemons: []harness.Daemon{harness.DaemonC, harness.DaemonRust, harness.DaemonOurs}},
		{Protection: protection.NoSubmounts, Expect: func(string) expectation { return expectation{Outcome: guest.OK} }},
		recoverColumn(),
	}
}

// noneExpect is protection none's promise: the bug as it is.
func noneExpect(kernel string) expectation {
	if kernel == harness.KernelVulnerable {
		// The test proves the bug is real: it fails if it stops reproducing.
		return expectation{Outcome: guest.EBADF, Submount: true}
	}
	return expectation{Outcome: guest.OK, Submount: true}
}

// Launchers: how Kata starts kata-virtiofsd for a cell.
const (
	// launcherGo is Kata's Go runtime ≥ 3.2: harness.StartDaemon with its
	// argv and the listening socket as fd 3.
	launcherGo = ""
	// launcherRuntimeRS is runtime-rs 4.1.0 (katalaunch.StartRuntimeRS):
	// --socket-path, the .../<id>/ro share, -o announce_submounts, the
	// ready line on piped stderr, SIGKILL.
	launcherRuntimeRS = "runtime-rs 4.1.0"
	// launcherKataGo302 and launcherKataGo410: Kata's own Go launch code
	// of that tag (katalaunch's fixture in Kata's virtcontainers:
	// createVirtiofsDaemon, virtiofsd.Start with fd 3, Stop), with the
	// tag's default virtio-fs configuration.
	launcherKataGo302 = "Kata 3.0.2 Go code"
	launcherKataGo410 = "Kata 4.1.0 Go code"
)

// kataGoTag is the Kata tag of a Go-code launcher.
var kataGoTag = map[string]string{launcherKataGo302: "3.0.2", launcherKataGo410: "4.1.0"}

// cell is one boot of the matrix.
type cell struct {
	Kernel     string
	Daemon     harness.Daemon
	Protection protection.Protection
	Scenario   guest.Scenario
	Pressure   guest.Pressure
	Expect     expectation
	Launcher   string
}

func (c cell) name() string {
	parts := []string{c.Kernel, string(c.Daemon), string(c.Protection), string(c.Scenario), string(c.Pressure)}
	if c.Launcher != launcherGo {
		parts = append([]string{strings.ReplaceAll(c.Launcher, " ", "-")}, parts...)
	}
	return strings.Join(parts, "/")
}

// launcherLabel names the launcher in the table.
func (c cell) launcherLabel() string {
	if c.Launcher == launcherGo {
		return "Go ≥3.2 argv"
	}
	return c.Launcher
}

// launcherCells: kata-virtiofsd launched by launcher, one scenario per
// protection and daemon on each kernel (the launch differs, the guest's bug
// does not: the full scenario grid runs under the Go ≥3.2 argv above).
func launcherCells(launcher string) []cell {
	var cells []cell
	for _, k := range []string{harness.KernelVulnerable, harness.KernelFixed} {
		for _, dp := range []struct {
			d harness.Daemon
			p protection.Protection
			e func(string) expectation
		}{
			{harness.DaemonOurs, protection.Recover, recoverColumn().Expect},
			{harness.DaemonRust, protection.NoSubmounts, func(string) expectation { return expectation{Outcome: guest.OK} }},
			{harness.DaemonC, protection.NoSubmounts, func(string) expectation { return expectation{Outcome: guest.OK} }},
			{harness.DaemonRust, protection.None, noneExpect},
		} {
			cells = append(cells, cell{Kernel: k, Daemon: dp.d, Protection: dp.p, Scenario: guest.BindDetach, Pressure: guest.DropCaches,
				Expect: dp.e(k), Launcher: launcher})
		}
	}
	return cells
}

func matrixCells() []cell {
	var cells []cell
	for _, k := range []string{harness.KernelVulnerable, harness.KernelFixed} {
		for _, col := range matrixColumns() {
			daemons := col.Daemons
			if daemons == nil {
				daemons = []harness.Daemon{harness.DaemonC, harness.DaemonRust}
			}
			for _, d := range daemons {
				for _, s := range []guest.Scenario{guest.BindDetach, guest.SlaveUmount} {
					for _, p := range []guest.Pressure{guest.DropCaches, guest.Memory} {
						cells = append(cells, cell{Kernel: k, Daemon: d, Protection: col.Protection, Scenario: s, Pressure: p, Expect: col.Expect(k)})
					}
				}
			}
		}
	}
	for _, l := range []string{launcherRuntimeRS, launcherKataGo302, launcherKataGo410} {
		cells = append(cells, launcherCells(l)...)
	}
	return cells
}

// row is one line of the printed table.
type row struct {
	ran      bool
	cell     cell
	observed string
	pass     bool
	elapsed  time.Duration
}

const (
	guestMemMB  = 256
	cellTimeout = 4 * time.Minute
	// settle: how long the container keeps re-reading an intact volume
	// (guest.KeySettleMS). The forgotten root's FORGET reached the daemons
	// within 250 ms of pressure in every run here, under load.
	settle = 3 * time.Second
)

// TestMatrix boots every cell and asserts its outcome; it prints the table of
// expected and observed results at the end.
func TestMatrix(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	env := harness.NewEnv(t)
	// Two cells at a time: on 2 cores the 40 cells took 1m40s this way and
	// 3m13s one by one (a passing cell's guest idles through its settle
	// window); 4 at a time was no faster (1m54s).
	parallel := 2
	if v := os.Getenv("KSG_E2E_PARALLEL"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "KSG_E2E_PARALLEL=%q: want a number", v)
		require.Positive(t, n, "KSG_E2E_PARALLEL=%q: want at least 1", v)
		parallel = n
	}
	sem := make(chan struct{}, parallel)

	cells := matrixCells()
	var mu sync.Mutex
	rows := make([]row, len(cells))
	start := time.Now()
	t.Run("cells", func(t *testing.T) {
		for i, c := range cells {
			t.Run(c.name(), func(t *testing.T) {
				if parallel > 1 {
					t.Parallel()
				}
				sem <- struct{}{}
				defer func() { <-sem }()
				r := row{ran: true, cell: c, observed: "setup failed"}
				t0 := time.Now()
				defer func() {
					r.pass, r.elapsed = !t.Failed(), time.Since(t0)
					mu.Lock()
					rows[i] = r
					mu.Unlock()
				}()
				runCell(t, env, c, &r.observed)
			})
		}
	})
	var ran []row
	for _, r := range rows {
		if r.ran {
			ran = append(ran, r)
		}
	}
	printTable(t, ran, time.Since(start), parallel)
}

// runCell boots one guest and asserts what it saw; observed gets the summary
// for the table, even when the cell stops early.
func runCell(t *testing.T, env *harness.Env, c cell, observed *string) {
	layout := harness.LayoutGo
	if c.Launcher == launcherRuntimeRS {
		layout = harness.LayoutRuntimeRS
	}
	dir, share := newCellDirAt(t, layout)
	args := harness.DaemonSpec{Protection: c.Protection, Upstream: env.Upstream[c.Daemon], StateDir: filepath.Join(dir, "state")}.Args(share.Dir)
	bootCell(t, env, c, dir, share, args, observed)
}

// newCellDir makes a cell's work directory, whose state subdirectory is the
// daemon's state dir, and the host share the guest sees, laid out as Kata's
// Go runtime lays it out.
func newCellDir(t *testing.T) (string, *hostShare) {
	return newCellDirAt(t, harness.LayoutGo)
}

// newCellDirAt is newCellDir with the share's layout (harness.Layout*).
func newCellDirAt(t *testing.T, layout string) (string, *hostShare) {
	// Short paths: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ksg-e2e-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	share, err := newHostShare(dir, "sb", layout)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, share.Close()) })
	return dir, share
}

// runningDaemon is a started daemon, whichever launcher started it.
type runningDaemon interface {
	Exited() (bool, error)
}

// bootCell starts kata-virtiofsd on share (with args under the Go launcher;
// runtime-rs builds its own), boots c's guest against it and asserts what
// the guest saw; the daemon's log is dir/daemon.log.
func bootCell(t *testing.T, env *harness.Env, c cell, dir string, share *hostShare, args []string, observed *string) {
	path := env.KataVirtiofsd
	socket := filepath.Join(dir, "vhost.sock")
	daemonLog := filepath.Join(dir, "daemon.log")
	var d runningDaemon
	switch c.Launcher {
	case launcherRuntimeRS:
		d = startRuntimeRS(t, env, c, dir, share, socket, daemonLog)
	case launcherKataGo302, launcherKataGo410:
		d, socket = startKataGo(t, env, c, dir, share, daemonLog)
	default:
		hd, err := harness.StartDaemon(path, args, dir, socket, daemonLog)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, hd.Stop()) })
		t.Logf("daemon: %s %s", path, strings.Join(args, " "))
		d = hd
	}

	spec := harness.VM{
		QEMU: env.QEMU, Kernel: env.BzImage(c.Kernel), Initrd: env.Initrd,
		Socket: socket, Tag: "share", Console: filepath.Join(dir, "console.log"),
		MemMB: guestMemMB, Timeout: cellTimeout,
		Append: scenarioParams(c, share),
	}
	*observed = "no result"
	console, vmErr := harness.Run(context.Background(), spec)
	dlog, _ := os.ReadFile(daemonLog)
	if errors.Is(vmErr, harness.ErrHung) {
		*observed = "hung (killed)"
	}
	if vmErr != nil {
		t.Fatalf("%v\ndaemon log:\n%s", vmErr, harness.Tail(dlog, 30))
	}
	res, err := guest.ParseConsole(console)
	if err != nil {
		t.Fatalf("%v; console tail:\n%s\ndaemon log:\n%s", err, harness.Tail(console, 40), harness.Tail(dlog, 30))
	}
	*observed = describe(res)
	t.Logf("guest %s: %s", res.Kernel, res.Line())
	if c.Protection == protection.Recover {
		*observed += checkRecoveries(t, c, d, filepath.Join(dir, "state"), share, daemonLog)
	}
	if c.Daemon == harness.DaemonOurs {
		// Not an upstream installed on this host: our own daemon served.
		dlog, _ := os.ReadFile(daemonLog)
		require.Contains(t, string(dlog), "serving the share with kata-virtiofsd's own daemon", "daemon log:\n%s", harness.Tail(dlog, 30))
	}
	if !assertCell(t, c, res) {
		t.Logf("console tail:\n%s\ndaemon log:\n%s", harness.Tail(console, 40), harness.Tail(dlog, 30))
	}
}

// scenarioParams is the guest's kernel command line for a cell.
func scenarioParams(c cell, share *hostShare) []string {
	return []string{
		guest.KeyMode + "=" + string(guest.ModeScenario),
		guest.KeyScenario + "=" + string(c.Scenario), guest.KeyPressure + "=" + string(c.Pressure),
		guest.KeyTag + "=share", guest.KeyVolume + "=" + share.Volume,
		guest.KeyMarker + "=" + share.Marker, guest.KeyTree + "=" + share.Tree,
		guest.KeySettleMS + "=" + strconv.Itoa(int(settle.Milliseconds())),
	}
}

// describe summarises a result for the table.
func describe(r *guest.Result) string {
	s := expectation{Outcome: r.Outcome, Submount: r.Submount()}.String()
	s += fmt.Sprintf(" (dev share %s vol %s ctr %s)", devString(r.ShareDev), devString(r.VolumeDev), devString(r.ContainerDev))
	if r.FailedAfterMS > 0 || r.Outcome != guest.OK {
		s += fmt.Sprintf(" at read %d, %d ms after pressure", r.Attempts, r.FailedAfterMS)
	}
	if r.Error != "" {
		s += ": " + r.Error
	}
	return s
}

func devString(d uint64) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d))
}

// assertCell checks the result against the cell's expectation and that the
// scenario really built the dangerous state; it reports whether all held.
func assertCell(t *testing.T, c cell, r *guest.Result) bool {
	t.Helper()
	ok := true
	check := func(cond bool, format string, args ...any) {
		if !cond {
			ok = false
			t.Errorf(format, args...)
		}
	}
	check(r.Scenario == c.Scenario && r.Pressure == c.Pressure, "guest ran %s/%s, want %s/%s", r.Scenario, r.Pressure, c.Scenario, c.Pressure)
	check(r.Outcome == c.Expect.Outcome, "outcome %q (%s), want %q", r.Outcome, r.Error, c.Expect.Outcome)
	check(r.Submount() == c.Expect.Submount, "submount %v (share dev %s, volume dev %s), want %v",
		r.Submount(), devString(r.ShareDev), devString(r.VolumeDev), c.Expect.Submount)
	// The hazard: no mount left on the volume's dentry in any namespace.
	check(r.OriginalMounts == 0, "%d mounts left at the volume's original place: the scenario did not unpin it", r.OriginalMounts)
	check(r.TreeEntries == treeDirs*(treeFiles+1)+1, "guest walked %d tree entries, want %d", r.TreeEntries, treeDirs*(treeFiles+1)+1)
	check(r.DentriesAfter < r.DentriesBefore, "pressure did not shrink the dentry cache (%d -> %d)", r.DentriesBefore, r.DentriesAfter)
	if c.Pressure == guest.Memory {
		check(r.OOMKilled, "memory hog was not ended by the OOM killer")
	}
	if r.Outcome == guest.OK {
		check(time.Duration(r.ReadForMS)*time.Millisecond >= settle,
			"container stopped reading the volume %d ms after pressure, want %s", r.ReadForMS, settle)
		// The container still sees the volume as the guest first did: its
		// own superblock with submounts, the share's without.
		check(r.ContainerDev == r.VolumeDev, "container sees volume dev %s, guest saw %s", devString(r.ContainerDev), devString(r.VolumeDev))
	}
	return ok
}

func printTable(t *testing.T, rows []row, total time.Duration, parallel int) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nVM truth table: %d cells in %s (%d at a time); kata-virtiofsd built from the tree, started with Kata's Go argv or as runtime-rs 4.1.0 starts it\n",
		len(rows), total.Round(time.Second), parallel)
	fmt.Fprintf(&b, "| launched as | kernel | daemon | protection | scenario | pressure | expected | observed | result | time |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		result := "as expected"
		if !r.pass {
			result = "**UNEXPECTED**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0fs |\n", r.cell.launcherLabel(), r.cell.Kernel, r.cell.Daemon, r.cell.Protection,
			r.cell.Scenario, r.cell.Pressure, r.cell.Expect, r.observed, result, r.elapsed.Seconds())
	}
	fmt.Print(b.String())
	if p := os.Getenv("KSG_E2E_TABLE"); p != "" {
		require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o644))
	}
}
