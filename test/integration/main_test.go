package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Environment the suite reads.
const (
	integrationEnv = "KSG_INTEGRATION"
	// kataShimEnv points at a real Kata containerd-shim-kata-v2 to use as the
	// delegate instead of the stand-in.
	kataShimEnv = "KATA_SHIM"
)

// binaries are the shims under test, built once per test binary by TestMain.
type binaries struct {
	// dir goes first on containerd's PATH: it holds containerd-shim-kata-v2
	// (ours), kata-runtime (which our shim runs beside it to inspect a guest
	// kernel its cache does not know) and containerd-shim-standin-v2 (the
	// stand-in).
	dir     string
	ours    string
	standin string
}

// suite holds what TestMain prepared; it is written once before any test runs.
var suite struct {
	bins    *binaries
	workDir string
	err     error
}

func TestMain(m *testing.M) {
	code := func() int {
		if os.Getenv(integrationEnv) != "1" {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "ksg-int-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		suite.workDir = dir
		suite.bins, suite.err = buildBinaries(filepath.Join(dir, "bin"))
		return m.Run()
	}()
	os.Exit(code)
}

// buildBinaries builds our shim, kata-runtime and the stand-in from this
// checkout, as `make build` does (without cgo), so the suite never runs a
// stale bin/.
func buildBinaries(dir string) (*binaries, error) {
	b := &binaries{
		dir:     dir,
		ours:    filepath.Join(dir, "containerd-shim-kata-v2"),
		standin: filepath.Join(dir, "containerd-shim-standin-v2"),
	}
	for out, pkg := range map[string]string{
		b.ours:                             "./cmd/containerd-shim-kata-v2",
		filepath.Join(dir, "kata-runtime"): "./cmd/kata-runtime",
		b.standin:                          "./test/standin-shim",
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if outb, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, outb)
		}
	}
	return b, nil
}
