package fsdaemon

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// defaultGCPercent is the daemon's GOGC. Go's default, 100, lets the heap
// reach twice what is live; go-fuse allocates about 1 KiB per request, so
// between collections the heap fills with garbage up to that goal, and the
// daemon's memory per inode the guest holds was 360 bytes (Rust virtiofsd:
// 430). At 50 it was 279 bytes, at 25 261: little more to gain while the
// collector runs twice as often. Collections of a heap of a few MiB cost
// tens of microseconds, against 20-50 µs of CPU per request: throughput did
// not move (BENCHMARKS.md, "virtio-fs daemon driven from the host").
//
// No GOMEMLIMIT is set: the live heap grows with the inodes the guest
// holds (135 bytes each, up to the fd limit, a million on a Kata host), and
// a fixed limit below it makes the collector run without pause. A 6 MiB
// limit gave 182 bytes per inode here, with a few thousand inodes only.
const defaultGCPercent = 50

// runtimeSettings are the Go runtime settings the daemon applies; a zero
// field leaves the runtime's value.
type runtimeSettings struct {
	gcPercent int
	maxProcs  int
}

// daemonRuntime chooses GOGC and GOMAXPROCS for a daemon with a pool of
// workers, unless the operator's environment (getenv) sets them.
//
// GOMAXPROCS follows --thread-pool-size: virtiofsd's pool bounds the
// requests served at once, and more Ps than goroutines with work only make
// the scheduler wake and spin threads between requests. With Kata's pool
// of 1 and GOMAXPROCS 2 (this 2-core machine's default) a LOOKUP+GETATTR
// pair cost the daemon 59 µs of CPU; with 1, 30 µs, and throughput rose by
// a third. Blocking system calls still hand the P over, so the hiprio
// queue and the vhost-user socket are served meanwhile.
func daemonRuntime(getenv func(string) string, pool, procs int) runtimeSettings {
	var s runtimeSettings
	if getenv("GOGC") == "" {
		s.gcPercent = defaultGCPercent
	}
	if getenv("GOMAXPROCS") == "" {
		s.maxProcs = min(procs, max(1, pool))
	}
	return s
}

// onePIOBytes is the most one READ's or WRITE's system call moves in a
// daemon with one P (see maxIOPerCall). On the 2-core test host a 128 KiB
// write of the page cache took 12 µs and a read 21 µs, against 120-140 µs
// for 1 MiB; sysmon takes the P only from a call it sees in two checks in a
// row, at least 20 µs apart. 64 KiB calls cost the daemon as much CPU and
// make twice the calls (BENCHMARKS.md, "virtio-fs daemon driven from the
// host", has both).
const onePIOBytes = 128 << 10

// maxIOPerCall is the passthrough file system's MaxIOPerCall for a daemon
// running with procs Ps.
//
// With one P, Go's system monitor takes the P from a goroutine whose system
// call has lasted a sysmon tick (20 µs or more) when no other P is idle, and
// hands it to another thread; the call's thread then finds no P when it
// returns, queues the goroutine and sleeps. A 1 MiB pwritev2 or preadv takes
// over 100 µs, so every large READ and WRITE paid for two thread switches
// and a futex wake-up: with Kata's pool of 1, 1 MiB WRITEs cost the daemon
// 268-304 µs of CPU per MiB against Rust virtiofsd's 205-218. Calls of at
// most onePIOBytes mostly end within the tick. With more Ps an idle one
// exists while a single request is in its system call and sysmon leaves
// the call alone; cutting then only adds calls (it cost CPU with a pool of
// 4), so there is no limit.
func maxIOPerCall(procs int) int {
	if procs == 1 {
		return onePIOBytes
	}
	return 0
}

// launcherProcs is the runtime's GOMAXPROCS before OneProcForLauncher
// lowered it; 0 when it did not.
var launcherProcs int

// OneProcForLauncher gives this process one P, unless the operator set
// GOMAXPROCS: kata-virtiofsd's launcher decides how the share is served,
// then execs an upstream virtiofsd or stays as the sandboxed daemon's
// waiting parent for the sandbox's life, and needs no parallelism for any
// of it. Allocating from a second P's caches made the parent's memory a
// few hundred KiB larger (BENCHMARKS.md). ApplyRuntimeDefaults still takes
// the pool's bound against the runtime's own GOMAXPROCS. main calls it
// first thing.
func OneProcForLauncher() {
	if os.Getenv("GOMAXPROCS") == "" {
		launcherProcs = runtime.GOMAXPROCS(1)
	}
}

// hostProcs is the GOMAXPROCS the runtime chose for this process.
func hostProcs() int {
	if launcherProcs > 0 {
		return launcherProcs
	}
	return runtime.GOMAXPROCS(0)
}

// ApplyRuntimeDefaults sets GOGC and GOMAXPROCS (see daemonRuntime) for
// this process, which is about to Serve o: it serves the share itself
// (--sandbox=none) or only waits for its sandboxed daemon and relays its log
// (a pool of 0: one P). The sandboxed daemon applies its own in
// RunSandboxChild. It changes the whole process, so the binary's main
// calls it, not Serve.
//
// For a sandboxed daemon it also sets, in this process's environment, which
// the child inherits and its runtime reads at start: GODEBUG (see
// daemonGODEBUG), and GOMAXPROCS to the daemon's, unless the operator set
// it. A runtime that starts with more Ps than it keeps has already
// allocated from each of them: the daemon's memory was a few hundred KiB
// larger when it lowered GOMAXPROCS only after its start.
func ApplyRuntimeDefaults(ctx context.Context, o *virtiofsd.Options) {
	pool := 0
	mode, err := fssandbox.ParseMode(string(o.Sandbox))
	if err == nil && mode == fssandbox.ModeNone {
		pool = o.ThreadPoolSize
	}
	// Before this process's own settings lower GOMAXPROCS.
	child := daemonRuntime(os.Getenv, o.ThreadPoolSize, hostProcs())
	set := applyDaemonRuntime(pool)
	if err == nil && mode != fssandbox.ModeNone {
		if g, ok := daemonGODEBUG(os.Getenv("GODEBUG")); ok {
			_ = os.Setenv("GODEBUG", g)
			set["child_godebug"] = g
		}
		if child.maxProcs != 0 {
			_ = os.Setenv("GOMAXPROCS", strconv.Itoa(child.maxProcs))
			set["child_gomaxprocs"] = child.maxProcs
		}
	}
	log.G(ctx).WithFields(set).Debug("go runtime settings")
}

// schedtraceMillis is the schedtrace the sandboxed daemon runs with: the
// largest the runtime accepts (2^31-1 ms, 24.8 days).
//
// Go's system monitor (sysmon) sleeps deeply once every P is idle, and the
// next system call wakes it, with its 20 µs period restarted. A daemon
// serving one request at a time goes idle between requests, so every
// request paid a futex wake-up, and sysmon's sleeps and wakes after it:
// 22 % of the daemon's CPU in a profile of LOOKUP+FORGET churn (perf, pool
// of 1). With schedtrace set, sysmon never sleeps deeply (it must print on
// time); its period grows to 10 ms while it finds nothing to do. Measured
// with the daemon-direct benchmark (BENCHMARKS.md), CPU per operation fell
// by a quarter to a third on the metadata rows, and throughput rose.
//
// The cost: sysmon then wakes about 80 times a second while the daemon is
// idle, 19 ms of CPU in 10 s against 1 ms without (perf stat), where it
// otherwise sleeps. The trace line itself is printed only once the host's
// monotonic clock passes the interval (a host up for 24.8 days) and every
// interval after that; Serve drops it from the relayed log. An operator's
// GODEBUG that sets schedtrace (schedtrace=0: none) is kept as it is.
const schedtraceMillis = 1<<31 - 1

// daemonGODEBUG returns godebug with schedtrace set, and whether it changed
// it: it does not when the operator set schedtrace.
func daemonGODEBUG(godebug string) (string, bool) {
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
			return godebug, false
		}
	}
	set := "schedtrace=" + strconv.Itoa(schedtraceMillis)
	if strings.TrimSpace(godebug) == "" {
		return set, true
	}
	return godebug + "," + set, true
}

// applyDaemonRuntime applies daemonRuntime for this process and returns
// what it set, for the log.
func applyDaemonRuntime(pool int) map[string]any {
	s := daemonRuntime(os.Getenv, pool, hostProcs())
	set := map[string]any{}
	if s.gcPercent != 0 {
		debug.SetGCPercent(s.gcPercent)
		set["gogc"] = s.gcPercent
	} else {
		set["gogc"] = "GOGC=" + os.Getenv("GOGC")
	}
	if s.maxProcs != 0 {
		runtime.GOMAXPROCS(s.maxProcs)
		set["gomaxprocs"] = s.maxProcs
	} else {
		set["gomaxprocs"] = "GOMAXPROCS=" + os.Getenv("GOMAXPROCS")
	}
	return set
}
