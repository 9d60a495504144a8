package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Kernel variants of test/kernels/build.sh the VM tests boot.
const (
	KernelVulnerable = "vulnerable"
	KernelFixed      = "fixed"
)

// Env is what every guest boot needs: QEMU, the guest kernels, the daemons
// and kata-virtiofsd, and an initramfs around the guest init.
type Env struct {
	Root          string // the repository
	QEMU          string
	Kernels       string
	Initrd        string
	Upstream      map[Daemon]string // the upstream virtiofsd of each flavour
	KataVirtiofsd string            // built from this tree by NewEnv
}

// EnvOption adds to what NewEnv builds.
type EnvOption func(*envConfig)

type envConfig struct{ posix bool }

// WithPOSIXSuite also compiles test/posix (`go test -c`) into the
// initramfs as guest.POSIXBinary, for guest.ModePOSIX.
func WithPOSIXSuite() EnvOption { return func(c *envConfig) { c.posix = true } }

// NewEnv checks the prerequisites (each missing one skips, or fails under
// CI) and builds the initramfs into a temporary directory of t.
func NewEnv(t *testing.T, opts ...EnvOption) *Env {
	t.Helper()
	var cfg envConfig
	for _, o := range opts {
		o(&cfg)
	}
	testutil.RequiresRoot(t)
	root := testutil.RepoRoot(t)
	env := &Env{
		Root:    root,
		QEMU:    testutil.RequiresCommand(t, "qemu-system-x86_64"),
		Kernels: testutil.GuestKernelsDir(t),
		Upstream: map[Daemon]string{
			DaemonC:    CDaemonPath,
			DaemonRust: filepath.Join(testutil.CacheDir(), "bin/virtiofsd-rust"),
		},
	}
	for d, p := range env.Upstream {
		_, err := os.Stat(p)
		testutil.Require(t, err == nil, string(d)+" virtiofsd missing at "+p+" (test/setup installs it)")
	}
	// The product path: every daemon is started through kata-virtiofsd,
	// built here from this tree as make build builds it: a stale bin/ must
	// not stand in for the code under test.
	env.KataVirtiofsd = testutil.BuildCommand(t, "kata-virtiofsd")

	work := t.TempDir()
	initBin := filepath.Join(work, "init")
	env.goBuild(t, "build", initBin, "./test/e2e/guestinit")
	var extra []GuestFile
	if cfg.posix {
		suite := filepath.Join(work, "posix.test")
		env.goBuild(t, "test", suite, "./test/posix")
		extra = append(extra, GuestFile{Name: strings.TrimPrefix(guest.POSIXBinary, "/"), Path: suite})
	}
	env.Initrd = filepath.Join(work, "initramfs.cpio")
	require.NoError(t, WriteInitramfs(env.Initrd, initBin, extra...))
	return env
}

// goBuild builds a static guest binary: `go build` or `go test -c`.
func (e *Env) goBuild(t *testing.T, verb, out, pkg string) {
	t.Helper()
	args := []string{"build", "-trimpath", "-o", out, pkg}
	if verb == "test" {
		args = []string{"test", "-c", "-trimpath", "-o", out, pkg}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = e.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go %s %s: %s", verb, pkg, b)
}

// BzImage is the boot image of a kernel variant.
func (e *Env) BzImage(variant string) string {
	return filepath.Join(e.Kernels, variant, "bzImage")
}
