package fsdaemon

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

func TestDaemonRuntime(t *testing.T) {
	for _, tc := range []struct {
		name        string
		env         map[string]string
		pool, procs int
		want        runtimeSettings
	}{
		{"Kata's pool of 1 on a large host: one P", nil, 1, 64, runtimeSettings{gcPercent: defaultGCPercent, maxProcs: 1}},
		{"pool of 4: four Ps", nil, 4, 64, runtimeSettings{gcPercent: defaultGCPercent, maxProcs: 4}},
		{"pool larger than the CPUs: the CPUs", nil, 16, 2, runtimeSettings{gcPercent: defaultGCPercent, maxProcs: 2}},
		{"no pool (requests served inline, or the waiting parent): one P", nil, 0, 8, runtimeSettings{gcPercent: defaultGCPercent, maxProcs: 1}},
		{"operator's GOGC wins", map[string]string{"GOGC": "200"}, 1, 8, runtimeSettings{maxProcs: 1}},
		{"operator's GOMAXPROCS wins", map[string]string{"GOMAXPROCS": "8"}, 1, 8, runtimeSettings{gcPercent: defaultGCPercent}},
		{"both the operator's", map[string]string{"GOGC": "off", "GOMAXPROCS": "3"}, 1, 8, runtimeSettings{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := daemonRuntime(func(k string) string { return tc.env[k] }, tc.pool, tc.procs)
			require.Equal(t, tc.want, got)
		})
	}
}

// applyDaemonRuntime changes this process's runtime, as the daemon's start
// does.
func TestApplyDaemonRuntime(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMAXPROCS", "")
	restoreRuntime(t)
	set := applyDaemonRuntime(1)
	require.Equal(t, map[string]any{"gogc": defaultGCPercent, "gomaxprocs": 1}, set)
	require.Equal(t, 1, runtime.GOMAXPROCS(0))
	require.Equal(t, defaultGCPercent, debug.SetGCPercent(defaultGCPercent), "GOGC the daemon runs with")
}

func TestDaemonGODEBUG(t *testing.T) {
	set := "schedtrace=2147483647"
	for _, tc := range []struct {
		name, env, want string
		changed         bool
	}{
		{"none set: schedtrace", "", set, true},
		{"the operator's other settings are kept", "madvdontneed=1", "madvdontneed=1," + set, true},
		{"the operator's schedtrace wins", "schedtrace=1000", "schedtrace=1000", false},
		{"schedtrace=0 turns it off", "madvdontneed=1,schedtrace=0", "madvdontneed=1,schedtrace=0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := daemonGODEBUG(tc.env)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.changed, changed)
		})
	}
}

// The sandboxed daemon is a child that inherits this process's environment
// (fssandbox.Spawn); the runtime reads schedtrace and GOMAXPROCS only at its
// start. The operator's GOMAXPROCS is left as it is.
func TestApplyRuntimeDefaultsSetsTheSandboxedDaemonsEnvironment(t *testing.T) {
	restoreRuntime(t)
	for _, tc := range []struct {
		name          string
		sandbox       virtiofsd.SandboxMode
		pool          int
		gomaxprocs    string // the operator's
		wantGODEBUG   string
		wantMaxProcs  string
		wantProcsHere int
	}{
		{"namespace", "namespace", 1, "", "schedtrace=2147483647", "1", 1},
		{"chroot", "chroot", 1, "", "schedtrace=2147483647", "1", 1},
		{"namespace, pool of 4 on two CPUs", "namespace", 4, "", "schedtrace=2147483647", "2", 1},
		{"namespace, the operator's GOMAXPROCS", "namespace", 1, "2", "schedtrace=2147483647", "2", 2},
		// Serves in this process, whose runtime has started.
		{"none", "none", 1, "", "", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMAXPROCS", tc.gomaxprocs)
			t.Setenv("GODEBUG", "")
			runtime.GOMAXPROCS(2) // as the runtime chose it on two CPUs, or from the operator's GOMAXPROCS=2
			ApplyRuntimeDefaults(context.Background(), &virtiofsd.Options{Sandbox: tc.sandbox, ThreadPoolSize: tc.pool})
			require.Equal(t, tc.wantGODEBUG, os.Getenv("GODEBUG"))
			require.Equal(t, tc.wantMaxProcs, os.Getenv("GOMAXPROCS"))
			require.Equal(t, tc.wantProcsHere, runtime.GOMAXPROCS(0))
		})
	}
}

// The launcher runs with one P, but a daemon it serves in its own process
// (--sandbox=none) gets its pool's bound against the CPUs the runtime
// chose, not against that one P.
func TestOneProcForLauncher(t *testing.T) {
	restoreRuntime(t)
	t.Cleanup(func() { launcherProcs = 0 })
	t.Setenv("GOGC", "")
	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(2)
	OneProcForLauncher()
	require.Equal(t, 1, runtime.GOMAXPROCS(0))
	ApplyRuntimeDefaults(context.Background(), &virtiofsd.Options{Sandbox: "none", ThreadPoolSize: 4})
	require.Equal(t, 2, runtime.GOMAXPROCS(0))

	launcherProcs = 0
	t.Setenv("GOMAXPROCS", "2")
	OneProcForLauncher()
	require.Equal(t, 2, runtime.GOMAXPROCS(0), "the operator's GOMAXPROCS")
}

func TestRelayLogDropsTheRuntimesSchedtraceLine(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	relayLog(ctx, strings.NewReader(`SCHED 2147483647ms: gomaxprocs=1 idleprocs=1 threads=5 spinningthreads=0 needspinning=0 idlethreads=2 runqueue=0 [0]
{"level":"info","msg":"served"}
not JSON
`))
	var got []string
	for _, e := range hook.AllEntries() {
		got = append(got, e.Message)
	}
	require.Equal(t, []string{"served", "virtio-fs daemon"}, got)
}

// The file system cuts READs and WRITEs into calls of at most onePIOBytes
// only when the daemon runs with one P: there sysmon would hand the P away
// during every long call; with more an idle P exists and it does not.
func TestTheDaemonCutsLargeIOOnlyWithOneP(t *testing.T) {
	restoreRuntime(t)
	for _, tc := range []struct {
		name       string
		gomaxprocs string // the operator's GOMAXPROCS, which the runtime read at start
		startProcs int    // GOMAXPROCS at start: the operator's, or the CPUs
		pool       int
		wantProcs  int
		want       int
	}{
		{"Kata's pool of 1 on two CPUs: one P, cut", "", 2, 1, 1, onePIOBytes},
		{"pool of 4 on two CPUs: two Ps, not cut", "", 2, 4, 2, 0},
		{"pool of 4 on one CPU: one P, cut", "", 1, 4, 1, onePIOBytes},
		{"the operator's GOMAXPROCS=2 with a pool of 1: two Ps, not cut", "2", 2, 1, 2, 0},
		{"the operator's GOMAXPROCS=1 with a pool of 4: one P, cut", "1", 1, 4, 1, onePIOBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMAXPROCS", tc.gomaxprocs)
			runtime.GOMAXPROCS(tc.startProcs)
			applyDaemonRuntime(tc.pool)
			require.Equal(t, tc.wantProcs, runtime.GOMAXPROCS(0))
			o := &virtiofsd.Options{ThreadPoolSize: tc.pool}
			require.Equal(t, tc.want, fsOptions(o, nil, nil, runtime.GOMAXPROCS(0)).MaxIOPerCall)
		})
	}
}

// restoreRuntime puts this process's GOMAXPROCS and GOGC back after a test
// that applies the daemon's.
func restoreRuntime(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	gc := debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	})
}

func TestMaxIOPerCall(t *testing.T) {
	for _, tc := range []struct {
		procs, want int
	}{
		{1, 128 << 10},
		{2, 0},
		{64, 0},
	} {
		t.Run(strconv.Itoa(tc.procs)+" Ps", func(t *testing.T) {
			require.Equal(t, tc.want, maxIOPerCall(tc.procs))
		})
	}
}
