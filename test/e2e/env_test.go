package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Kernel variants of test/kernels/build.sh the matrix boots.
const (
	KernelVulnerable = "vulnerable"
	KernelFixed      = "fixed"
)

const cDaemonPath = "/usr/lib/qemu/virtiofsd"

// repoRoot is the directory holding go.mod, found from the test's cwd.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "go.mod not found above the test directory")
		dir = parent
	}
}

// kernelsDir asks test/kernels/build.sh where the guest kernels of the
// current inputs are; not built is a missing prerequisite.
func kernelsDir(t testing.TB) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "test/kernels/build.sh"), "--print-dir")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	testutil.Require(t, err == nil, "guest kernels: "+strings.TrimSpace(stderr.String()))
	return strings.TrimSpace(string(out))
}

// manifest reads <kernels>/MANIFEST: variant -> release.
func manifest(t testing.TB, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	require.NoError(t, err)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, "\t", 3)
		require.Len(t, f, 3, "MANIFEST line %q", line)
		m[f[0]] = f[1]
	}
	return m
}

// suiteEnv is what every cell of the matrix needs.
type suiteEnv struct {
	QEMU          string
	Kernels       string
	Initrd        string
	Upstream      map[Daemon]string
	KataVirtiofsd string
}

func newSuiteEnv(t *testing.T) *suiteEnv {
	t.Helper()
	testutil.RequiresRoot(t)
	root := repoRoot(t)
	env := &suiteEnv{
		QEMU:    testutil.RequiresCommand(t, "qemu-system-x86_64"),
		Kernels: kernelsDir(t),
		Upstream: map[Daemon]string{
			DaemonC:    cDaemonPath,
			DaemonRust: filepath.Join(testutil.CacheDir(), "bin/virtiofsd-rust"),
		},
	}
	for d, p := range env.Upstream {
		_, err := os.Stat(p)
		testutil.Require(t, err == nil, string(d)+" virtiofsd missing at "+p+" (test/setup installs it)")
	}
	// The product path: every daemon is started through kata-virtiofsd
	// (make e2e builds bin/ first).
	env.KataVirtiofsd = filepath.Join(root, "bin/kata-virtiofsd")
	_, err := os.Stat(env.KataVirtiofsd)
	testutil.Require(t, err == nil, env.KataVirtiofsd+" missing: run make build (make e2e does)")

	work := t.TempDir()
	initBin := filepath.Join(work, "init")
	build := exec.Command("go", "build", "-trimpath", "-o", initBin, "./test/e2e/guestinit")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build guest init: %s", out)
	env.Initrd = filepath.Join(work, "initramfs.cpio")
	require.NoError(t, writeInitramfs(env.Initrd, initBin))
	return env
}

func (e *suiteEnv) bzImage(variant string) string {
	return filepath.Join(e.Kernels, variant, "bzImage")
}
