package delegate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		kind    config.DelegateKind
		version string
		err     string
	}{
		{name: "Go 4.1.0", out: `Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 4.1.0, commit: ddcb1ad8d23cbb4323f86c209f132b89592902df` + "\n",
			kind: config.DelegateGo4, version: "4.1.0"},
		{name: "Go 3.2.0", out: `Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 3.2.0, commit: ` + "\n",
			kind: config.DelegateGo3, version: "3.2.0"},
		{name: "Go 3.0.x says no flavour", out: `Kata Containers containerd shim: id: "io.containerd.kata.v2", version: 3.0.2, commit: `,
			kind: config.DelegateGo3, version: "3.0.2"},
		{name: "Go 2.x", out: `Kata Containers containerd shim: id: "io.containerd.kata.v2", version: 2.5.2, commit: abc`,
			kind: config.DelegateGo3, version: "2.5.2"},
		{name: "a 4.0 release candidate has 4.0's rules", out: `Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 4.0.0-rc0, commit: x`,
			kind: config.DelegateGo4, version: "4.0.0-rc0"},
		{name: "runtime-rs", out: "some log line\nKata Containers containerd shim (Rust): id: \"io.containerd.kata.v2\", version: 4.1.0, commit: x\n",
			kind: config.DelegateRuntimeRS, version: "4.1.0"},
		{name: "-v output is the containerd library's, not Kata's", out: "containerd-shim-kata-v2:\n  Version:  1.6.6+unknown\n  Revision: \n",
			err: `no "Kata Containers containerd shim" line`},
		{name: "empty", out: "", err: `no "Kata Containers containerd shim" line`},
		{name: "no version", out: `Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", commit: x`, err: `version "" in`},
		{name: "version not a release", out: `Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: latest, commit: x`, err: `version "latest" in`},
		{name: "unknown flavour", out: `Kata Containers containerd shim (Zig): id: "io.containerd.kata.v2", version: 4.1.0, commit: x`, err: `unknown flavour "Zig"`},
		{name: "unterminated flavour", out: `Kata Containers containerd shim (Golang: version: 4.1.0`, err: "unterminated flavour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := parseVersion([]byte(tc.out))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Equal(t, Identity{}, id)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.kind, id.Kind)
			require.Equal(t, tc.version, id.Version)
		})
	}
}

func FuzzParseVersion(f *testing.F) {
	f.Add([]byte(`Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 4.1.0, commit: x`))
	f.Add([]byte(`Kata Containers containerd shim: id: "io.containerd.kata.v2", version: 3.0.2, commit: `))
	f.Fuzz(func(t *testing.T, out []byte) {
		id, err := parseVersion(out)
		if err != nil {
			require.Equal(t, Identity{}, id)
			return
		}
		require.Contains(t, []config.DelegateKind{config.DelegateGo3, config.DelegateGo4, config.DelegateRuntimeRS}, id.Kind)
	})
}

// fakeShim writes an executable that answers --version with line and
// appends a line to <path>.calls each time it runs.
func fakeShim(t *testing.T, path, line string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho run >>'%s.calls'\necho '%s'\n", path, strings.ReplaceAll(line, "'", `'"'"'`))
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
}

func calls(t *testing.T, path string) int {
	b, err := os.ReadFile(path + ".calls")
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	return strings.Count(string(b), "run\n")
}

func goShimLine(version string) string {
	return fmt.Sprintf(`Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: %s, commit: test`, version)
}

// TestIdentifyCache: the binary is asked once per identity; replacing it
// asks again.
func TestIdentifyCache(t *testing.T) {
	dir := t.TempDir()
	shim := filepath.Join(dir, "containerd-shim-kata-v2")
	cache := statedir.DelegateCacheDir(filepath.Join(dir, "state"))
	fakeShim(t, shim, goShimLine("3.2.0"))
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		id, err := identifyBinary(ctx, shim, cache)
		require.NoError(t, err)
		require.Equal(t, config.DelegateGo3, id.Kind)
	}
	require.Equal(t, 1, calls(t, shim), "cached after the first ask")

	// An upgrade in place: new contents, new mtime.
	fakeShim(t, shim, goShimLine("4.1.0"))
	later := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(shim, later, later))
	id, err := identifyBinary(ctx, shim, cache)
	require.NoError(t, err)
	require.Equal(t, config.DelegateGo4, id.Kind)
	require.Equal(t, 2, calls(t, shim))

	// No cache directory: asked every time.
	_, err = identifyBinary(ctx, shim, "")
	require.NoError(t, err)
	require.Equal(t, 3, calls(t, shim))
}

func TestIdentifyErrors(t *testing.T) {
	dir := t.TempDir()
	notKata := filepath.Join(dir, "standin")
	fakeShim(t, notKata, "flag provided but not defined: -version")
	failing := filepath.Join(dir, "failing")
	require.NoError(t, os.WriteFile(failing, []byte("#!/bin/sh\nexit 3\n"), 0o755))
	self, err := os.Executable()
	require.NoError(t, err)

	for _, tc := range []struct {
		name, path, err string
	}{
		{"missing", filepath.Join(dir, "nope"), "delegate shim " + filepath.Join(dir, "nope") + " cannot be identified: no such file or directory; install Kata's containerd-shim-kata-v2 there or point [submount_guard] delegate_shim at it: not found"},
		{"not a Kata shim", notKata, "delegate shim " + notKata + ` is not a Kata shim this guard knows: its --version gave "flag provided but not defined: -version": no "Kata Containers containerd shim" line; point [submount_guard] delegate_shim at Kata's upstream containerd-shim-kata-v2, or pin delegate_kind (go-3, go-4, runtime-rs) if it is a wrapper of one: failed precondition`},
		{"exits non-zero silently", failing, "delegate shim " + failing + ` is not a Kata shim this guard knows: its --version gave "": no "Kata Containers containerd shim" line (exit status 3)`},
		{"ourselves", self, "is this guard shim itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := statedir.DelegateCacheDir(t.TempDir())
			_, err := identifyBinary(context.Background(), tc.path, cache)
			require.ErrorContains(t, err, tc.err)
			entries, _ := os.ReadDir(cache)
			require.Empty(t, entries, "a failed identification is not cached")
		})
	}
}

// BenchmarkIdentifyCached is what a start pays to know its delegate once
// the binary's identity is cached: a stat of the binary and a read of one
// small file.
func BenchmarkIdentifyCached(b *testing.B) {
	dir := b.TempDir()
	shim := filepath.Join(dir, "containerd-shim-kata-v2")
	script := fmt.Sprintf("#!/bin/sh\necho '%s'\n", goShimLine("4.1.0"))
	if err := os.WriteFile(shim, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	cache := statedir.DelegateCacheDir(dir)
	ctx := context.Background()
	if _, err := identifyBinary(ctx, shim, cache); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := identifyBinary(ctx, shim, cache); err != nil {
			b.Fatal(err)
		}
	}
}
