package virtiofsd

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

const cDaemonPath = "/usr/lib/qemu/virtiofsd"

func rustDaemonPath(t testing.TB) string {
	t.Helper()
	return testutil.RequiresCacheFile(t, "bin/virtiofsd-rust")
}

func cDaemon(t testing.TB) string {
	t.Helper()
	_, err := os.Stat(cDaemonPath)
	testutil.Require(t, err == nil, cDaemonPath+" missing (qemu-system-common, test/setup/10-apt.sh)")
	return cDaemonPath
}

func TestParseVersion(t *testing.T) {
	cases := []struct {
		name    string
		out     string
		flavour Flavour
		version string
	}{
		{"rust", "virtiofsd 1.13.2\n", FlavourRust, "1.13.2"},
		{"rust older", "virtiofsd 1.7.0", FlavourRust, "1.7.0"},
		{"rust pre-release", "virtiofsd 1.14.0-rc1\n", FlavourRust, "1.14.0-rc1"},
		{"qemu", "virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 QEMU\nusing FUSE kernel interface version 7.36\n", FlavourC, "7.2.22"},
		{"qemu 6", "virtiofsd version 6.2.0\nusing FUSE kernel interface version 7.31\n", FlavourC, "6.2.0"},
		{"empty", "", "", ""},
		{"no version", "virtiofsd\n", "", ""},
		{"ours", "kata-virtiofsd (kata-submount-guard) 1a2b3c\n", "", ""},
		{"rust-like with more lines", "virtiofsd 1.13.2\nsomething else\n", "", ""},
		{"qemu-like without FUSE line", "virtiofsd version 7.2.22\n", "", ""},
		{"another program", "bash: --version: invalid option\n", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, v, err := parseVersion([]byte(tc.out))
			if tc.flavour == "" {
				require.ErrorIs(t, err, errdefs.ErrNotImplemented)
				require.ErrorContains(t, err, "neither the Rust virtiofsd")
				require.Empty(t, f)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.flavour, f)
			require.Equal(t, tc.version, v)
		})
	}
}

func TestParseHelp(t *testing.T) {
	// The layouts of the two daemons' --help, in short.
	rust := "Usage: virtiofsd [OPTIONS]\n\nOptions:\n      --shared-dir <SHARED_DIR>\n          Shared directory\n\n" +
		"      --no-announce-submounts\n          Do not announce\n\n  -o <COMPAT_OPTIONS>\n          Old options\n" +
		"  -h, --help\n          Print help\n"
	require.Equal(t, []string{"--help", "--no-announce-submounts", "--shared-dir"}, parseHelp(FlavourRust, []byte(rust)))

	c := "usage: virtiofsd [options]\n\n    -h   --help                print help\n    -o cache=<mode>            cache\n" +
		"    -o flock|no_flock          flock\n    -o posix_acl/no_posix_acl  acl\n    -o killpriv_v2/no_killpriv_v2\n" +
		"    --fd=FDNUM                 fd\n    --thread-pool-size=NUM     pool\n"
	require.Equal(t, []string{"--fd", "--help", "--thread-pool-size", "cache", "flock", "killpriv_v2", "no_flock",
		"no_killpriv_v2", "no_posix_acl", "posix_acl"}, parseHelp(FlavourC, []byte(c)))
	require.Equal(t, []string{"--fd", "--help", "--thread-pool-size"}, parseHelp(FlavourRust, []byte(c)), "-o names are the C daemon's only")
}

// TestDetectRealDaemons runs detection against the two real daemons and
// checks the option lists the translation tests assume.
func TestDetectRealDaemons(t *testing.T) {
	cases := []struct {
		name    string
		path    func(testing.TB) string
		flavour Flavour
		version string
		options []string
	}{
		{"rust", rustDaemonPath, FlavourRust, "1.13.2", rust113Options},
		{"qemu-c", cDaemon, FlavourC, "7.2.", qemu72Options},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			d, err := Detect(context.Background(), path, "")
			require.NoError(t, err)
			require.Equal(t, path, d.Path)
			require.Equal(t, tc.flavour, d.Flavour)
			require.True(t, strings.HasPrefix(d.Version, tc.version), d.Version)
			require.Equal(t, tc.options, d.Options)
		})
	}
}

// TestDetectCache shows the cache answering for an unchanged binary and
// being ignored once the binary changes.
func TestDetectCache(t *testing.T) {
	src := cDaemon(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "virtiofsd")
	copyFile(t, src, bin, 0o755)
	cacheDir := filepath.Join(dir, "cache")
	ctx := context.Background()

	first, err := Detect(ctx, bin, cacheDir)
	require.NoError(t, err)
	require.Equal(t, FlavourC, first.Flavour)
	entries, err := os.ReadDir(cacheDir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	cacheFile := filepath.Join(cacheDir, entries[0].Name())

	// Mark the cached answer: only a cache hit can return the mark.
	var e cacheEntry
	b, err := os.ReadFile(cacheFile)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &e))
	e.Daemon.Version = "from-cache"
	b, err = json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cacheFile, b, 0o600))

	hit, err := Detect(ctx, bin, cacheDir)
	require.NoError(t, err)
	require.Equal(t, "from-cache", hit.Version)

	// A changed binary (new mtime and ctime) is probed again.
	later := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(bin, later, later))
	fresh, err := Detect(ctx, bin, cacheDir)
	require.NoError(t, err)
	require.Equal(t, first.Version, fresh.Version)

	// A garbled cache entry is ignored, not trusted.
	require.NoError(t, os.WriteFile(cacheFile, []byte(`{"key":`), 0o600))
	again, err := Detect(ctx, bin, cacheDir)
	require.NoError(t, err)
	require.Equal(t, first, again)

	// An unwritable cache dir does not stop detection.
	blocker := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(blocker, nil, 0o600))
	d, err := Detect(ctx, bin, filepath.Join(blocker, "cache"))
	require.NoError(t, err)
	require.Equal(t, first, d)
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-virtiofsd")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return p
}

func TestDetectErrors(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "virtiofsd")
	require.NoError(t, os.WriteFile(notExec, []byte("x"), 0o644))
	cases := []struct {
		name string
		path string
		err  error
		want string
	}{
		{"missing", "/nonexistent/virtiofsd", errdefs.ErrNotFound, "upstream virtiofsd /nonexistent/virtiofsd does not exist"},
		{"relative", "virtiofsd", errdefs.ErrInvalidArgument, "not an absolute path"},
		{"directory", t.TempDir(), errdefs.ErrInvalidArgument, "is not an executable file"},
		{"not executable", notExec, errdefs.ErrInvalidArgument, "is not an executable file"},
		{"another program", script(t, "echo 'GNU bash, version 5.2'\n"), errdefs.ErrNotImplemented, `--version printed "GNU bash, version 5.2"`},
		{"no --fd", script(t, "case $1 in --version) echo 'virtiofsd 1.0.0';; *) echo '      --socket-path <P>';; esac\n"),
			errdefs.ErrNotImplemented, "lists no --fd option"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Detect(context.Background(), tc.path, "")
			require.ErrorIs(t, err, tc.err)
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("failing --version", func(t *testing.T) {
		_, err := Detect(context.Background(), script(t, "echo broken >&2; exit 3\n"), "")
		require.ErrorContains(t, err, "--version: exit status 3")
		require.ErrorContains(t, err, `broken`)
	})
}
