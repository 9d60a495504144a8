package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Real Kata instead of the stand-in: KATA_SHIM is the upstream shim,
// KATA_CONFIG_BASE a working Kata configuration.toml that the tests extend
// through config.d (kernel and [submount_guard] only).
const kataConfigBaseEnv = "KATA_CONFIG_BASE"

// delegateShim is what [submount_guard] delegate_shim names in the tests.
func delegateShim(t testing.TB) string {
	if p := os.Getenv(kataShimEnv); p != "" {
		testutil.Require(t, os.Getenv(kataConfigBaseEnv) != "", kataConfigBaseEnv+" must name a working Kata configuration when "+kataShimEnv+" is set")
		return p
	}
	return suite.bins.standin
}

// usingStandin reports whether the delegate is the stand-in, whose records
// some assertions read.
func usingStandin() bool { return os.Getenv(kataShimEnv) == "" }

func requireStandin(t testing.TB) {
	t.Helper()
	if !usingStandin() {
		t.Skip("skipped: reads the stand-in's records; " + kataShimEnv + " is set")
	}
}

// guestKernels are the real kernels test/kernels/build.sh builds.
type guestKernels struct {
	fixed, vulnerable string
}

func requireKernels(t testing.TB) guestKernels {
	t.Helper()
	requireIntegration(t)
	dir := testutil.GuestKernelsDir(t)
	k := guestKernels{fixed: filepath.Join(dir, "fixed", "bzImage"), vulnerable: filepath.Join(dir, "vulnerable", "bzImage")}
	for _, p := range []string{k.fixed, k.vulnerable} {
		_, err := os.Stat(p)
		testutil.Require(t, err == nil, p+" missing (run test/kernels/build.sh)")
	}
	return k
}

// kataConfig is one Kata configuration of a test: a configuration.toml (ours,
// minimal, or KATA_CONFIG_BASE) plus config.d/50-test.toml with the kernel
// and the [submount_guard] table, as an operator would add them.
type kataConfig struct {
	kernel            string
	onVulnerable      string
	onUnknown         string
	protection        string // virtiofs_protection; default: ours
	enableAnnotations []string
	delegate          string // default: delegateShim(t)
	// delegateKind pins [submount_guard] delegate_kind; default: go-3 for
	// the stand-in, which takes Kata 3's hand-off but is no Kata shim to
	// ask, and auto (its --version) for a real Kata shim.
	delegateKind string
	stateDir     string // default: <dir>/state
}

// writeKataConfig writes cfg under dir and returns the path of its
// configuration.toml and the state directory.
func writeKataConfig(t testing.TB, dir string, cfg kataConfig) (path, stateDir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "config.d"), 0o755))
	path = filepath.Join(dir, "configuration.toml")
	if base := os.Getenv(kataConfigBaseEnv); base != "" && !usingStandin() {
		b, err := os.ReadFile(base)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, b, 0o644))
	} else {
		// What the check reads; the stand-in runs no VM.
		require.NoError(t, os.WriteFile(path, []byte(`[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/nonexistent/replaced-by-config.d"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/kata-virtiofsd"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/kata-virtiofsd"]
`), 0o644))
	}
	if cfg.delegate == "" {
		cfg.delegate = delegateShim(t)
	}
	if cfg.delegateKind == "" && usingStandin() {
		cfg.delegateKind = "go-3"
	}
	stateDir = cfg.stateDir
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	list := func(l []string) string {
		qs := make([]string, len(l))
		for i, s := range l {
			qs[i] = q(s)
		}
		return "[" + strings.Join(qs, ", ") + "]"
	}
	dropIn := fmt.Sprintf("[hypervisor.qemu]\nkernel = %s\nenable_annotations = %s\n\n[submount_guard]\n", q(cfg.kernel), list(cfg.enableAnnotations))
	if cfg.onVulnerable != "" {
		dropIn += "on_vulnerable = " + q(cfg.onVulnerable) + "\n"
	}
	if cfg.onUnknown != "" {
		dropIn += "on_unknown = " + q(cfg.onUnknown) + "\n"
	}
	if cfg.protection != "" {
		dropIn += "virtiofs_protection = " + q(cfg.protection) + "\n"
	}
	if cfg.delegateKind != "" {
		dropIn += "delegate_kind = " + q(cfg.delegateKind) + "\n"
	}
	dropIn += "delegate_shim = " + q(cfg.delegate) + "\nstate_dir = " + q(stateDir) + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.d", "50-test.toml"), []byte(dropIn), 0o644))
	return path, stateDir
}

// plans lists the sandbox plans in stateDir by sandbox id.
func plans(t testing.TB, stateDir string) map[string]*plan.Plan {
	t.Helper()
	out := map[string]*plan.Plan{}
	entries, err := os.ReadDir(stateDir)
	if os.IsNotExist(err) || errors.Is(err, syscall.ENOTDIR) {
		return out
	}
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		id := strings.TrimSuffix(e.Name(), ".json")
		p, err := plan.Read(stateDir, id)
		require.NoError(t, err)
		out[id] = p
	}
	return out
}
