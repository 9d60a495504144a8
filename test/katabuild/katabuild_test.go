package katabuild

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTestBinaryNeedsTheSetupBuild: a tag test/setup/70-kata.sh did not
// build is an error naming the step, not a build from nothing.
func TestTestBinaryNeedsTheSetupBuild(t *testing.T) {
	dir := t.TempDir()
	fixture := filepath.Join(dir, "ksg_x_test.go")
	require.NoError(t, os.WriteFile(fixture, []byte("package x\n"), 0o644))
	_, err := Tree{Tag: "9.9.9", Dir: filepath.Join(dir, "kata", "9.9.9")}.TestBinary(context.Background(), "virtcontainers", fixture)
	require.ErrorContains(t, err, "kata 9.9.9 not built by test/setup/70-kata.sh")
}
