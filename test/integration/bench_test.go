package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/ttrpc"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
)

// BenchmarkShimStart measures what containerd waits for at sandbox creation:
// from exec of the shim's `start` to the address on its stdout and its exit,
// for the stand-in alone, for a do-nothing Go exec wrapper in front of it
// (testdata/execwrapper: the floor of any Go wrapper) and for our shim
// handing off to it, interleaved in one run. Our shim resolves the
// configuration, checks the fixed test kernel (its inspection cache warmed
// by the first start), writes the plan and execs the stand-in. Reported: the
// median of each and ours minus the stand-in's.
//
//	KSG_INTEGRATION=1 go test -run '^$' -bench BenchmarkShimStart -benchtime 200x ./test/integration/
//
// KSG_BENCH_RUN_DIR puts the bundles and state_dir (plan, kernel cache)
// under another directory, e.g. /dev/shm: on most hosts containerd's bundles
// and state_dir live on tmpfs (/run), here /tmp and /run are on disk.
// KSG_BENCH_CONFIG=kata-sized replaces the minimal configuration.toml with one
// the size of the qemu file Kata ships (kataSizedConfig).
func BenchmarkShimStart(b *testing.B) {
	kernels := requireKernels(b)
	dir := b.TempDir()
	if d := os.Getenv("KSG_BENCH_RUN_DIR"); d != "" {
		var err error
		dir, err = os.MkdirTemp(d, "ksg-bench-")
		require.NoError(b, err)
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	cfg := kataConfig{kernel: kernels.fixed, onVulnerable: "refuse", onUnknown: "refuse"}
	cfgPath, stateDir := writeKataConfig(b, dir, cfg)
	switch size := os.Getenv("KSG_BENCH_CONFIG"); size {
	case "", "minimal":
	case "kata-sized":
		require.NoError(b, os.WriteFile(cfgPath, kataSizedConfig(b, kernels.fixed), 0o644))
	default:
		b.Fatalf("KSG_BENCH_CONFIG=%q: want minimal or kata-sized", size)
	}
	c := startContainerd(b, containerdOptions{})
	// containerd's environment for shims (runtime/v2/shim/util.go Command).
	env := append(os.Environ(), "KATA_CONF_FILE="+cfgPath, "GOMAXPROCS=2", "MAX_SHIM_VERSION=2",
		"TTRPC_ADDRESS="+c.ttrpcAddress, "GRPC_ADDRESS="+c.address, "NAMESPACE="+ctrNamespace)
	env = withoutEnv(env, "KSG_STANDIN_RECORD_DIR")

	start := func(bin, id string) time.Duration {
		bundle := filepath.Join(dir, "bundles", id)
		require.NoError(b, os.MkdirAll(bundle, 0o755))
		require.NoError(b, os.WriteFile(filepath.Join(bundle, "config.json"),
			[]byte(`{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"`+id+`"}}`), 0o644))
		// The shim's log FIFO, held open read-write as containerd holds it;
		// the shim server exits when it cannot open it.
		fifo := filepath.Join(bundle, "log")
		require.NoError(b, syscall.Mkfifo(fifo, 0o700))
		logs, err := os.OpenFile(fifo, os.O_RDWR|syscall.O_NONBLOCK, 0)
		require.NoError(b, err)
		defer logs.Close()
		cmd := exec.Command(bin, "-namespace", ctrNamespace, "-address", c.address, "-publish-binary", "/usr/bin/containerd", "-id", id, "start")
		cmd.Dir, cmd.Env = bundle, env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		t0 := time.Now()
		err = cmd.Run()
		elapsed := time.Since(t0)
		require.NoError(b, err, errb.String())
		address := strings.TrimSpace(out.String())
		require.True(b, strings.HasPrefix(address, "unix://"), "start printed %q", address)
		shutdownShim(b, address, id)
		_ = plan.Remove(stateDir, id)
		require.NoError(b, os.RemoveAll(bundle))
		return elapsed
	}

	// The floor of any Go wrapper: exec the stand-in, check nothing.
	wrapper := filepath.Join(dir, "execwrapper")
	build := exec.Command("go", "build", "-o", wrapper, "./testdata/execwrapper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as our shim is built
	out, err := build.CombinedOutput()
	require.NoError(b, err, string(out))
	env = append(env, "KSG_EXEC_WRAPPER_TARGET="+suite.bins.standin)

	// Warm the kernel cache and the page cache of the binaries.
	for _, bin := range []string{suite.bins.ours, suite.bins.standin, wrapper} {
		start(bin, "bench-warm")
	}

	alone := make([]time.Duration, 0, b.N)
	wrapped := make([]time.Duration, 0, b.N)
	guard := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		alone = append(alone, start(suite.bins.standin, fmt.Sprintf("bench-alone-%d", i)))
		wrapped = append(wrapped, start(wrapper, fmt.Sprintf("bench-wrapped-%d", i)))
		guard = append(guard, start(suite.bins.ours, fmt.Sprintf("bench-guard-%d", i)))
	}
	b.StopTimer()
	ma, mw, mg := median(alone), median(wrapped), median(guard)
	b.ReportMetric(ms(ma), "ms-standin-median")
	b.ReportMetric(ms(mw), "ms-execwrapper-median")
	b.ReportMetric(ms(mg), "ms-guard-median")
	b.ReportMetric(ms(mg-ma), "ms-overhead-median")
	// Each iteration times the three back to back, so the load of the
	// moment weighs on all of them; the median of the per-iteration
	// differences is the steadier figure on a busy machine.
	paired := make([]time.Duration, b.N)
	for i := range b.N {
		paired[i] = guard[i] - alone[i]
	}
	b.ReportMetric(ms(median(paired)), "ms-overhead-paired-median")
}

// shutdownShim ends the shim serving address and removes its socket.
func shutdownShim(b testing.TB, address, id string) {
	path := strings.TrimPrefix(address, "unix://")
	conn, err := net.Dial("unix", path)
	require.NoError(b, err)
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ctrNamespace), 10*time.Second)
	defer cancel()
	tasks := taskAPI.NewTaskClient(client)
	info, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: id})
	require.NoError(b, err)
	// A shim serving nothing holds nothing: kill it rather than wait for
	// its orderly exit, which takes seconds and would load the machine
	// during the next measurement.
	require.NoError(b, syscall.Kill(int(info.ShimPid), syscall.SIGKILL))
	deadline := time.Now().Add(10 * time.Second)
	for alive(int(info.ShimPid)) {
		require.True(b, time.Now().Before(deadline), "shim %s (pid %d) did not exit", id, info.ShimPid)
		time.Sleep(2 * time.Millisecond)
	}
	// runc's shim may exit before it removes its socket.
	_ = os.Remove(path)
}

// alive reports whether pid runs; a zombie (whose reaper is slow here) does
// not.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// kataSizedConfig is config/testdata/configuration-qemu.toml (Kata's tables
// and keys) with four comment lines before each key, as Kata documents every
// key in the file it ships: about 34 KB, of which 31 KB comments. The shim
// reads every byte of it at every start.
func kataSizedConfig(b *testing.B, kernel string) []byte {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "testdata", "configuration-qemu.toml"))
	require.NoError(b, err)
	const comment = "# Explains the key below, its default and when to change it, as Kata does.\n"
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(strings.ReplaceAll(string(data), "@KERNEL@", kernel), "\n") {
		if strings.Contains(line, "=") && !strings.HasPrefix(line, "#") {
			out.WriteString(strings.Repeat(comment, 4) + "#\n")
		}
		out.WriteString(line)
	}
	return out.Bytes()
}
