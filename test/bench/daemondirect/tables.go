package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// resultKey names the samples of one cell.
type resultKey struct {
	pool             int
	daemon, workload string
}

// throughput runs every workload on every daemon, rounds times: in each
// round each pool size, and within it the daemons in an order rotated by
// the round, so that drift of the machine spreads over all of them.
func throughput(ctx context.Context, cfg *config, b *strings.Builder) error {
	ws := workloads
	if cfg.workload != "" {
		ws = nil
		for _, k := range strings.Split(cfg.workload, ",") {
			for _, w := range workloads {
				if w.key == k {
					ws = append(ws, w)
				}
			}
		}
	}
	res := map[resultKey][]sample{}
	failures := map[resultKey][]string{}
	// By pool and daemon: its memory over a whole pass of the workloads,
	// when one process served them all.
	mems := map[memKey][]memory{}
	t0 := time.Now()
	for r := range cfg.rounds {
		for _, pool := range cfg.pools {
			for i := range cfg.daemons {
				d := cfg.daemons[(i+r)%len(cfg.daemons)]
				tag := fmt.Sprintf("%s-%d-%d", d.key, pool, r)
				s, err := start(cfg, d, pool, tag)
				if err != nil {
					return err
				}
				whole := true
				for _, w := range ws {
					k := resultKey{pool, d.key, w.key}
					smp, err := runWorkload(s, w, cfg)
					if err == nil {
						smp.round = r
						res[k] = append(res[k], smp)
						continue
					}
					// A daemon that fails a workload is reported and
					// replaced by a fresh one for the rest.
					exited, how := s.proc.Exited()
					msg := fmt.Sprintf("%s, pool %d, round %d, %s: %v (daemon exited: %v %v)", d.label, pool, r+1, w.key, err, exited, how)
					fmt.Fprintf(os.Stderr, "FAILED: %s; its log ends: %s\n", msg, s.logTail())
					failures[k] = append(failures[k], msg)
					whole = false
					s.stop()
					if s, err = start(cfg, d, pool, tag+"-again"); err != nil {
						return err
					}
				}
				if whole {
					m, err := idleMemory(s, cfg)
					if err != nil {
						s.stop()
						return fmt.Errorf("%s, pool %d: %w", d.key, pool, err)
					}
					mems[memKey{pool, d.key}] = append(mems[memKey{pool, d.key}], m)
				}
				if err := s.stop(); err != nil {
					return fmt.Errorf("%s, pool %d: %w", d.key, pool, err)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "round %d done, %v\n", r+1, time.Since(t0).Round(time.Second))
	}
	fmt.Fprintf(b, "%d rounds of %v per workload and daemon (after a warm-up of %v), %d requests in flight on one request queue; FORGET on the high-priority queue. Median, and in brackets the spread (min–max) over the rounds. CPU = the daemon's user+system time (all its processes and threads, /proc/PID/stat) per operation; ratio = ours (recover off) ÷ the other's median throughput, > 1 is better for ours; \"by round\": the median (min–max) of the same ratio taken in each round, in which the daemons took their turns one after the other.\n\n",
		cfg.rounds, cfg.dur, cfg.dur/6, cfg.streams)
	for _, pool := range cfg.pools {
		fmt.Fprintf(b, "Thread pool %d (--thread-pool-size=%d):\n\n", pool, pool)
		fmt.Fprintf(b, "| workload |")
		for _, d := range cfg.daemons {
			fmt.Fprintf(b, " %s |", d.label)
		}
		ratios := ratioColumns(cfg)
		var failed []string
		for _, rc := range ratios {
			fmt.Fprintf(b, " %s |", rc.label)
		}
		fmt.Fprintf(b, "\n| --- |%s%s\n", strings.Repeat(" ---: |", len(cfg.daemons)), strings.Repeat(" ---: |", len(ratios)))
		for _, w := range ws {
			unit, div := "ops/s", 1.0
			if w.data {
				unit, div = "MiB/s", 1<<20
			}
			fmt.Fprintf(b, "| %s |", w.label)
			med := map[string]float64{}
			byDaemon := map[string][]sample{}
			for _, d := range cfg.daemons {
				ss := res[resultKey{pool, d.key, w.key}]
				byDaemon[d.key] = ss
				if fails := len(failures[resultKey{pool, d.key, w.key}]); fails > 0 {
					failed = append(failed, failures[resultKey{pool, d.key, w.key}]...)
					if len(ss) == 0 {
						fmt.Fprintf(b, " failed in %d of %d rounds |", fails, cfg.rounds)
						continue
					}
				}
				rates, cpus := make([]float64, len(ss)), make([]float64, len(ss))
				for i, s := range ss {
					rates[i], cpus[i] = s.rate/div, float64(s.cpu)/1e3
				}
				m, lo, hi := stats(rates)
				cm, _, _ := stats(cpus)
				med[d.key] = m
				note := ""
				if len(ss) < cfg.rounds {
					note = fmt.Sprintf(", %d of %d rounds", len(ss), cfg.rounds)
				}
				fmt.Fprintf(b, " %s %s (%s–%s%s); CPU %s µs |", num(m), unit, num(lo), num(hi), note, num(cm))
			}
			for _, rc := range ratios {
				if med[rc.ours] == 0 || med[rc.other] == 0 {
					fmt.Fprintf(b, " – |")
					continue
				}
				fmt.Fprintf(b, " %.2f×", med[rc.ours]/med[rc.other])
				if pr := pairedRatios(byDaemon[rc.ours], byDaemon[rc.other]); len(pr) > 1 {
					m, lo, hi := stats(pr)
					fmt.Fprintf(b, " (by round %.2f×, %.2f–%.2f)", m, lo, hi)
				}
				fmt.Fprint(b, " |")
			}
			fmt.Fprintln(b)
		}
		fmt.Fprintln(b)
		for _, f := range failed {
			fmt.Fprintf(b, "- Failed: %s\n", f)
		}
		if len(failed) > 0 {
			fmt.Fprintln(b)
		}
		failed = nil
	}
	memoryOverWorkloads(b, cfg, mems)
	return nil
}

// memKey is one pool size and daemon.
type memKey struct {
	pool int
	d    string
}

// memoryOverWorkloads writes the table of each daemon's memory over the
// throughput workloads.
func memoryOverWorkloads(b *strings.Builder, cfg *config, mems map[memKey][]memory) {
	fmt.Fprintf(b, "Memory over the workloads above, kB summed over the daemon's processes, median (min–max) over the rounds in which one process served every workload: peak = VmHWM (includes the guest memory pages it touched, as a VMM's RSS does), of it the started process's own (the one Kata waits for: a sandboxing daemon's waiting parent); private = Private_Clean+Private_Dirty and anonymous = Anonymous (smaps_rollup) %v after the last workload. Ratio = ours (recover off) ÷ Rust, < 1 is better for ours.\n\n", cfg.idle)
	columns := []struct {
		label string
		f     func(memory) int
	}{
		{"peak", func(m memory) int { return m.peak }},
		{"peak of the started process", func(m memory) int { return m.startedPeak }},
		{"private when idle", func(m memory) int { return m.private }},
		{"anonymous when idle", func(m memory) int { return m.anon }},
	}
	fmt.Fprintf(b, "| pool | daemon |")
	for _, c := range columns {
		fmt.Fprintf(b, " %s |", c.label)
	}
	fmt.Fprintf(b, "\n| ---: | --- |%s\n", strings.Repeat(" ---: |", len(columns)))
	median := func(k memKey, f func(memory) int) (m, lo, hi float64) {
		v := make([]float64, len(mems[k]))
		for i, x := range mems[k] {
			v[i] = float64(f(x))
		}
		return stats(v)
	}
	for _, pool := range cfg.pools {
		for _, d := range cfg.daemons {
			k := memKey{pool, d.key}
			fmt.Fprintf(b, "| %d | %s |", pool, d.label)
			for _, c := range columns {
				if len(mems[k]) == 0 {
					fmt.Fprintf(b, " – |")
					continue
				}
				m, lo, hi := median(k, c.f)
				fmt.Fprintf(b, " %.0f (%.0f–%.0f) |", m, lo, hi)
			}
			fmt.Fprintln(b)
		}
		ours, rust := memKey{pool, "ours"}, memKey{pool, "rust"}
		if len(mems[ours]) == 0 || len(mems[rust]) == 0 {
			continue
		}
		fmt.Fprintf(b, "| %d | ours/Rust |", pool)
		for _, c := range columns {
			o, _, _ := median(ours, c.f)
			r, _, _ := median(rust, c.f)
			fmt.Fprintf(b, " %.2f× |", o/r)
		}
		fmt.Fprintln(b)
	}
	fmt.Fprintln(b)
}

// idleMemory is s's memory cfg.idle after the last request, with the peak
// of its whole run.
func idleMemory(s *started, cfg *config) (memory, error) {
	time.Sleep(cfg.idle)
	return readMemory(s.pids)
}

// runWorkload prepares w on s, warms up, measures and cleans up.
func runWorkload(s *started, w workload, cfg *config) (sample, error) {
	run, err := w.prepare(s.c)
	if err != nil {
		return sample{}, err
	}
	// A short warm-up: first-touch faults of the guest memory and the
	// daemon's caches.
	if _, err := measure(s, run, w.data, cfg.streams, cfg.dur/6); err != nil {
		return sample{}, err
	}
	smp, err := measure(s, run, w.data, cfg.streams, cfg.dur)
	if err != nil {
		return sample{}, err
	}
	return smp, run.done()
}

type ratioColumn struct{ label, ours, other string }

// ratioColumns are ours ÷ Rust, ours ÷ C, and recover on ÷ off, for the
// daemons measured.
func ratioColumns(cfg *config) []ratioColumn {
	has := map[string]bool{}
	for _, d := range cfg.daemons {
		has[d.key] = true
	}
	var out []ratioColumn
	for _, rc := range []ratioColumn{{"ours/Rust", "ours", "rust"}, {"ours/C", "ours", "c"}, {"recover on/off", "ours-recover", "ours"}, {"after/before", "ours", "ours-before"}} {
		if has[rc.ours] && has[rc.other] {
			out = append(out, rc)
		}
	}
	return out
}

// pairedRatios is ours ÷ other's throughput in each round that measured
// both. Within a round the daemons take their turns one after the other
// (a turn is every workload and the idle wait, about ten seconds with the
// defaults): a machine that slows down for a while moves both sides of such
// a ratio, where it moves only one side of a ratio of medians.
func pairedRatios(ours, other []sample) []float64 {
	rate := map[int]float64{}
	for _, s := range other {
		rate[s.round] = s.rate
	}
	var out []float64
	for _, s := range ours {
		if r, ok := rate[s.round]; ok && r > 0 {
			out = append(out, s.rate/r)
		}
	}
	return out
}

func stats(v []float64) (median, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

// num prints 3 significant digits.
func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// memoryAtScale looks up cfg.scale inodes (kept: the guest never forgets
// them) in each daemon and reads its memory at each step. A daemon that
// cannot hold a step's inodes (the descriptor limit) gets "–" from there on,
// with the reason under the table.
func memoryAtScale(ctx context.Context, cfg *config, b *strings.Builder) error {
	type cell struct{ rss, private, anon, peak []float64 }
	res := map[string][]cell{}     // by daemon, then by step (0: after INIT)
	stopped := map[string]string{} // by daemon: why the steps stopped
	rounds := min(cfg.rounds, 3)
	for r := range rounds {
		for i := range cfg.daemons {
			d := cfg.daemons[(i+r)%len(cfg.daemons)]
			s, err := start(cfg, d, 1, fmt.Sprintf("mem-%s-%d", d.key, r))
			if err != nil {
				return err
			}
			if res[d.key] == nil {
				res[d.key] = make([]cell, len(cfg.scale)+1)
			}
			record := func(step int) error {
				// Let a daemon's background work (a GC) settle.
				time.Sleep(200 * time.Millisecond)
				m, err := readMemory(s.pids)
				if err != nil {
					return err
				}
				c := &res[d.key][step]
				c.rss = append(c.rss, float64(m.rss))
				c.private = append(c.private, float64(m.private))
				c.anon = append(c.anon, float64(m.anon))
				c.peak = append(c.peak, float64(m.peak))
				return nil
			}
			if err := record(0); err != nil {
				s.stop()
				return fmt.Errorf("memory, %s: %w", d.key, err)
			}
			dir, err := s.c[0].lookup(rootID, "scale")
			if err != nil {
				s.stop()
				return fmt.Errorf("memory, %s: %w", d.key, err)
			}
			done := 0
			for step, n := range cfg.scale {
				if err := lookupRange(s.c, dir.NodeId, done, n); err != nil {
					// What the daemon could not hold is a result, not a
					// failure of the run.
					stopped[d.key] = fmt.Sprintf("%s: looking up %d inodes failed after %d: %v", d.label, n, done, err)
					break
				}
				done = n
				if err := record(step + 1); err != nil {
					s.stop()
					return fmt.Errorf("memory, %s: %w", d.key, err)
				}
			}
			if err := s.stop(); err != nil {
				return fmt.Errorf("memory, %s: %w", d.key, err)
			}
		}
	}
	fmt.Fprintf(b, "Memory with N files of one directory looked up and kept (no FORGET), thread pool 1, median of %d rounds; kB summed over the daemon's processes. Private = smaps_rollup Private_Clean+Private_Dirty (pages no other process maps: not the shared guest memory); peak = VmHWM (includes guest memory pages it touched). Per inode = (private at N − private after INIT) ÷ N, at the largest N the daemon held.\n\n", rounds)
	fmt.Fprintf(b, "| daemon | after INIT: RSS / private |")
	for _, n := range cfg.scale {
		fmt.Fprintf(b, " %d inodes: RSS / private / peak |", n)
	}
	fmt.Fprintf(b, " bytes per inode |\n| --- |%s ---: |\n", strings.Repeat(" ---: |", len(cfg.scale)+1))
	med := func(v []float64) float64 { m, _, _ := stats(v); return m }
	for _, d := range cfg.daemons {
		cs := res[d.key]
		fmt.Fprintf(b, "| %s | %.0f / %.0f |", d.label, med(cs[0].rss), med(cs[0].private))
		last := 0
		for i := range cfg.scale {
			c := cs[i+1]
			// Only a step every round reached.
			if len(c.rss) < rounds {
				fmt.Fprintf(b, " – |")
				continue
			}
			last = i + 1
			fmt.Fprintf(b, " %.0f / %.0f / %.0f |", med(c.rss), med(c.private), med(c.peak))
		}
		if last == 0 {
			fmt.Fprintf(b, " – |\n")
			continue
		}
		n := cfg.scale[last-1]
		fmt.Fprintf(b, " %.0f (at %d) |\n", (med(cs[last].private)-med(cs[0].private))*1024/float64(n), n)
	}
	fmt.Fprintln(b)
	for _, d := range cfg.daemons {
		if why, ok := stopped[d.key]; ok {
			fmt.Fprintf(b, "- Stopped: %s\n", why)
		}
	}
	if len(stopped) > 0 {
		fmt.Fprintln(b)
	}
	return nil
}

// lookupRange looks up files [from, to) of the scale directory.
func lookupRange(cs []*client, dir uint64, from, to int) error {
	ns := names("f", to)
	streams := len(cs)
	errs := make(chan error, streams)
	for w := range streams {
		go func() {
			for i := from + w; i < to; i += streams {
				if _, err := cs[w].lookup(dir, ns[i]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
