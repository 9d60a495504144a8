package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// benchMetrics are the guest's measurements, in the order of the table.
var benchMetrics = []struct {
	key, label string
	data       bool // bytes per op: report MiB/s; else ops/s
}{
	{"seq_write_64MiB", "64 MiB sequential write (1 MiB writes + fsync), ×5", true},
	{"seq_read_64MiB", "64 MiB sequential read (cold cache), ×5", true},
	{"rand_read_4KiB", "4 KiB random read (cold cache), 5×2000 reads", false},
	{"create_stat_unlink_10k", "create+stat+unlink, 10k files", false},
	{"readdir_10k", "readdir of 10k entries (cold cache), ×5", false},
}

type benchResult struct {
	ns     map[string]int64
	units  map[string]int64
	rssKB  int
	anonKB int
	// idleAnonKB is RssAnon after the guest left the share alone for
	// guest.BenchIdle.
	idleAnonKB int
}

// TestBenchDaemon runs the bench mode in one guest per daemon, in one test
// run, and prints (and writes to $KSG_BENCH_OUT) a markdown table.
// `make bench-daemon` runs it; it is skipped otherwise.
func TestBenchDaemon(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_BENCH_DAEMON")
	env := harness.NewEnv(t)
	rounds := 1
	if v, err := strconv.Atoi(os.Getenv("KSG_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	results := map[harness.Daemon][]benchResult{}
	for r := range rounds {
		for _, d := range daemons {
			dir := workDir(t)
			share, err := harness.NewShare(dir, "sb", "")
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, share.Close()) })
			var rss, anon, idleAnon int
			spec := daemonSpec(env, d, "", filepath.Join(dir, "state"))
			run := bootGuest(t, env, dir, share, d, spec, vmOptions{
				Mode: guest.ModeBench, Timeout: 20 * time.Minute,
				// The guest keeps the VM up a moment after this line.
				OnLine: func(line string, proc *harness.DaemonProc) {
					switch {
					case strings.HasSuffix(line, guest.SampleLine):
						rss, anon = proc.Memory()
					case strings.HasSuffix(line, guest.IdleSampleLine):
						_, idleAnon = proc.Memory()
					}
				},
			})
			res := benchResult{ns: map[string]int64{}, units: map[string]int64{}, rssKB: rss, anonKB: anon, idleAnonKB: idleAnon}
			requireChecksOK(t, d, run, "mount", "bench")
			for _, m := range benchMetrics {
				b, ok := run.Lines.Bench[m.key]
				require.True(t, ok, "%s did not report %s", d, m.key)
				res.ns[m.key], res.units[m.key] = b.NS, b.Units
			}
			results[d] = append(results[d], res)
			require.NotZero(t, idleAnon, "%s: no memory sample after the idle line", d)
			t.Logf("%s round %d: %v, peak RSS %d kB, private %d kB, %d kB after %v idle", d, r, res.ns, rss, anon, idleAnon, guest.BenchIdle)
		}
	}
	table := benchTable(results, rounds)
	fmt.Println(table)
	if out := os.Getenv("KSG_BENCH_OUT"); out != "" {
		require.NoError(t, os.WriteFile(out, []byte(table), 0o644))
	}
}

// median of the per-round values.
func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func benchTable(results map[harness.Daemon][]benchResult, rounds int) string {
	rate := func(kind harness.Daemon, key string, data bool) float64 {
		var v []float64
		for _, r := range results[kind] {
			sec := float64(r.ns[key]) / 1e9
			units := float64(r.units[key])
			if data {
				units /= 1 << 20
			}
			v = append(v, units/sec)
		}
		return median(v)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "QEMU 7.2 TCG (no KVM here: only ratios mean anything), guest 6.1 fixed kernel, 512 MiB memfd RAM, queue-size 1024, each daemon started through kata-virtiofsd (built from the tree) with Kata's argv (--syslog --cache=auto --thread-pool-size=1 --announce-submounts, the socket as fd 3; default sandbox), one guest per daemon in the same run, median of %d round(s). Ratio = ours ÷ reference throughput (higher is better).\n\n", rounds)
	fmt.Fprintf(&b, "| workload | ours (kata-virtiofsd) | Rust virtiofsd 1.13.2 | C virtiofsd (QEMU 7.2) | ours/Rust | ours/C |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range benchMetrics {
		unit := "ops/s"
		if m.data {
			unit = "MiB/s"
		}
		o, r, c := rate(harness.DaemonOurs, m.key, m.data), rate(harness.DaemonRust, m.key, m.data), rate(harness.DaemonC, m.key, m.data)
		fmt.Fprintf(&b, "| %s | %.1f %s | %.1f %s | %.1f %s | %.2f× | %.2f× |\n", m.label, o, unit, r, unit, c, unit, o/r, o/c)
	}
	mem := func(kind harness.Daemon, kb func(benchResult) int) float64 {
		var v []float64
		for _, r := range results[kind] {
			v = append(v, float64(kb(r))/1024)
		}
		return median(v)
	}
	for _, row := range []struct {
		label string
		kb    func(benchResult) int
	}{
		{"daemon peak RSS (VmHWM incl. guest pages it touched, all its processes; lower is better)", func(r benchResult) int { return r.rssKB }},
		{"daemon private memory at the end (RssAnon, all its processes; lower is better)", func(r benchResult) int { return r.anonKB }},
		{fmt.Sprintf("daemon private memory after %v of a quiet guest (RssAnon, all its processes; lower is better)", guest.BenchIdle), func(r benchResult) int { return r.idleAnonKB }},
	} {
		o, r, c := mem(harness.DaemonOurs, row.kb), mem(harness.DaemonRust, row.kb), mem(harness.DaemonC, row.kb)
		fmt.Fprintf(&b, "| %s | %.1f MiB | %.1f MiB | %.1f MiB | %.2f× | %.2f× |\n", row.label, o, r, c, o/r, o/c)
	}
	return b.String()
}
