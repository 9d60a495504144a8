package katabuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Tree is one tag's extracted Go runtime.
type Tree struct {
	Tag string
	// Dir is $KSG_CACHE/kata/<tag>.
	Dir string
}

// Runtime is the extracted src/runtime of the tag.
func (k Tree) Runtime() string {
	return filepath.Join(k.Dir, "src", "kata-containers-"+k.Tag, "src", "runtime")
}

// TestBinary builds pkg (relative to src/runtime, e.g. "virtcontainers")
// of the tag's tree with fixture (the file at fixturePath) as its only test
// file, and returns the test binary. Kata's own test files of pkg are left
// out: they may replace the very functions a fixture exercises (the
// virtcontainers TestMain fakes utils.StartCmd), and they make the build
// slower.
func (k Tree) TestBinary(ctx context.Context, pkg, fixturePath string) (string, error) {
	fixture, err := os.ReadFile(fixturePath)
	if err != nil {
		return "", err
	}
	archive, err := os.ReadFile(filepath.Join(k.Dir, "ARCHIVE_SHA256"))
	if err != nil {
		return "", fmt.Errorf("kata %s not built by test/setup/70-kata.sh: %w", k.Tag, err)
	}
	h := sha256.New()
	for _, part := range [][]byte{archive, []byte(pkg), fixture, []byte(runtime.Version())} {
		h.Write(part)
		h.Write([]byte{0})
	}
	name := strings.ReplaceAll(pkg, "/", "-")
	bin := filepath.Join(k.Dir, "testbin", name+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".test")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}

	work, err := os.MkdirTemp(k.Dir, "testbin-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	// A copy by hard links: nothing in it is written, and removing a test
	// file removes only the link.
	tree := filepath.Join(work, "runtime")
	if out, err := exec.CommandContext(ctx, "cp", "-al", k.Runtime(), tree).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copying kata %s: %w: %s", k.Tag, err, out)
	}
	dir := filepath.Join(tree, pkg)
	tests, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return "", err
	}
	for _, f := range tests {
		if err := os.Remove(f); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(strings.TrimSuffix(fixturePath, ".in"))), fixture, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(work, name+".test")
	args := []string{"test", "-c", "-o", out}
	if _, err := os.Stat(filepath.Join(tree, "vendor")); err == nil {
		args = append(args, "-mod=vendor")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./"+pkg)...)
	cmd.Dir = tree
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go test -c kata %s %s with %s: %w: %s", k.Tag, pkg, fixturePath, err, msg)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(out, bin); err != nil {
		return "", err
	}
	return bin, nil
}
