package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// RepoRoot is the directory holding go.mod, found from the test's cwd (its
// package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	require.NoError(t, err)
	return root
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// FindGuestKernels asks test/kernels/build.sh where the guest kernels of the
// current sources and patches are; an error says why they are not there.
func FindGuestKernels() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "test", "kernels", "build.sh"), "--print-dir")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("guest kernels not built, run test/kernels/build.sh (test/setup/50-kernels.sh does): %s", strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// GuestKernelsDir is FindGuestKernels as a prerequisite of t.
func GuestKernelsDir(t testing.TB) string {
	t.Helper()
	dir, err := FindGuestKernels()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	Require(t, err == nil, msg)
	return dir
}

// GuestKernelReleases reads <dir>/MANIFEST, which build.sh writes one line a
// variant: variant, release and banner separated by tabs. It returns
// variant -> release.
func GuestKernelReleases(t testing.TB, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	require.NoError(t, err)
	releases := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, "\t", 3)
		require.Len(t, f, 3, "MANIFEST line %q", line)
		releases[f[0]] = f[1]
	}
	return releases
}
