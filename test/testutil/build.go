package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildCommand builds the repository's ./cmd/<name> as make build does
// (static, without cgo) into a temporary directory of t and returns its
// path, so that a test runs the code it tests and not whatever bin/ holds.
// Go's build cache makes a repeated build cheap.
func BuildCommand(t testing.TB, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/"+name)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out
}
