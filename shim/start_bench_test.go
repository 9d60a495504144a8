package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// BenchmarkStartInProcess is the part of a sandbox start that runs inside
// our process, between its runtime start-up and the exec of the delegate:
// read the bundle and stdin, resolve the configuration, check the fixed test
// kernel (inspection cache warmed beforehand by guestkernel.Inspect, as
// kata-runtime warms it on the first start), write the plan and the bundle
// note. The
// exec is replaced by a stub that returns, after which start undoes its
// writes (as after a failed exec), so every iteration starts afresh.
func BenchmarkStartInProcess(b *testing.B) {
	kernel := filepath.Join(testutil.GuestKernelsDir(b), "fixed", "bzImage")

	// KSG_BENCH_RUN_DIR as in test/integration's BenchmarkShimStart.
	dir := b.TempDir()
	if d := os.Getenv("KSG_BENCH_RUN_DIR"); d != "" {
		var err error
		dir, err = os.MkdirTemp(d, "ksg-bench-")
		require.NoError(b, err)
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	bundle := filepath.Join(dir, "bundle")
	require.NoError(b, os.MkdirAll(bundle, 0o755))
	require.NoError(b, os.WriteFile(filepath.Join(bundle, specFile),
		[]byte(`{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"sb"}}`), 0o644))
	stateDir := filepath.Join(dir, "ksg-bench-state")
	_, err := guestkernel.Inspect(context.Background(), kernel, verdict.Options{CacheDir: statedir.KernelCacheDir(stateDir)})
	require.NoError(b, err)
	// A Kata 3.2.0 shim as far as --version goes; its identity is cached by
	// the first start, as on a node after its first sandbox.
	delegate := filepath.Join(dir, "containerd-shim-kata-v2.upstream")
	writeFakeKataShim(b, delegate, "3.2.0")
	cfg := writeConfig(b, b.TempDir(), kernel, delegate, stateDir, `on_vulnerable = "refuse"`, `on_unknown = "refuse"`)
	cwd, err := os.Getwd()
	require.NoError(b, err)
	require.NoError(b, os.Chdir(bundle))
	b.Cleanup(func() { _ = os.Chdir(cwd) })

	devnull, err := os.Open(os.DevNull)
	require.NoError(b, err)
	defer devnull.Close()
	var stderr strings.Builder
	s := &Shim{
		Args:   []string{"containerd-shim-kata-v2", "-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "sb", "start"},
		Env:    []string{"KATA_CONF_FILE=" + cfg},
		Stdin:  devnull,
		Stderr: &stderr,
	}
	execs := 0
	s.Exec = func(string, []string, []string) error { execs++; return nil }
	inv := parseArgs(s.Args)
	// The shim's own logger (FIFO and syslog sinks, package main) is not
	// linked into this package; its lines are formatted here all the same.
	ctx := quiet()
	require.NoError(b, s.start(ctx, inv, bundle), stderr.String())
	b.ResetTimer()
	for range b.N {
		if err := s.start(ctx, inv, bundle); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	require.Equal(b, b.N+1, execs)
}
