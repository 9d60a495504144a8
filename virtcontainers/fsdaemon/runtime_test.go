package fsdaemon

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
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
	procs := runtime.GOMAXPROCS(0)
	gc := debug.SetGCPercent(100)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
	})
	set := applyDaemonRuntime(1)
	require.Equal(t, map[string]any{"gogc": defaultGCPercent, "gomaxprocs": 1}, set)
	require.Equal(t, 1, runtime.GOMAXPROCS(0))
	require.Equal(t, defaultGCPercent, debug.SetGCPercent(defaultGCPercent), "GOGC the daemon runs with")
}
