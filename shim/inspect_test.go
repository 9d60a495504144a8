package shim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// testKernels returns test/kernels' output directory.
func testKernels(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(filepath.Join("..", "test", "kernels", "build.sh"), "--print-dir").Output()
	testutil.Require(t, err == nil, "guest kernels not built (run test/kernels/build.sh)")
	return strings.TrimSpace(string(out))
}

// TestKernelInspector: the shim's inspector gives what guestkernel.Inspect
// gives, from the cache when it can and else from the real kata-runtime,
// which fills the cache; an inspector that cannot run is an error saying
// what to install, never a verdict.
func TestKernelInspector(t *testing.T) {
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "kata-runtime")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/kata-runtime").CombinedOutput()
	require.NoError(t, err, string(out))
	missing := kernelInspector{command: filepath.Join(t.TempDir(), "kata-runtime")}

	t.Run("unreadable images are reported as in-process", func(t *testing.T) {
		dir := t.TempDir()
		junk := filepath.Join(dir, "junk")
		require.NoError(t, os.WriteFile(junk, []byte("not a kernel\n"), 0o644))
		for _, path := range []string{junk, filepath.Join(dir, "nope"), dir} {
			opts := verdict.Options{CacheDir: filepath.Join(dir, "cache")}
			want, wantErr := guestkernel.Inspect(ctx, path, opts)
			require.Error(t, wantErr)
			got, err := kernelInspector{command: bin}.Inspect(ctx, path, opts)
			require.EqualError(t, err, wantErr.Error())
			require.Equal(t, want, got)
		}
	})

	t.Run("real kernels: miss runs kata-runtime, then the cache answers", func(t *testing.T) {
		kernels := testKernels(t)
		for _, tc := range []struct {
			image string
			fixed []string
			want  verdict.Verdict
		}{
			{"fixed/bzImage", nil, verdict.Fixed},
			{"lying-fixed/bzImage", nil, verdict.Vulnerable},
			{"vulnerable-nobtf/vmlinux", nil, verdict.Vulnerable},
			{"vulnerable-nobtf/vmlinux", []string{"6.1.69"}, verdict.Fixed},
		} {
			t.Run(tc.image, func(t *testing.T) {
				path := filepath.Join(kernels, tc.image)
				cacheDir := filepath.Join(t.TempDir(), "cache")
				opts := verdict.Options{CacheDir: cacheDir, FixedReleases: tc.fixed}
				want, err := guestkernel.Inspect(ctx, path, verdict.Options{FixedReleases: tc.fixed})
				require.NoError(t, err)
				require.Equal(t, tc.want, want.Verdict, want.Reason)

				got, err := kernelInspector{command: bin}.Inspect(ctx, path, opts)
				require.NoError(t, err)
				require.Equal(t, want, got)
				entries, err := os.ReadDir(cacheDir)
				require.NoError(t, err)
				require.Len(t, entries, 1, "kata-runtime fills the cache")

				got, err = missing.Inspect(ctx, path, opts)
				require.NoError(t, err, "a hit needs no kata-runtime")
				require.Equal(t, want, got)
			})
		}
	})

	t.Run("an inspector that cannot run is an error", func(t *testing.T) {
		dir := t.TempDir()
		image := filepath.Join(dir, "vmlinuz")
		require.NoError(t, os.WriteFile(image, []byte("x"), 0o644))
		script := func(name, body string) kernelInspector {
			p := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
			return kernelInspector{command: p}
		}
		for name, tc := range map[string]struct {
			insp kernelInspector
			msg  string
		}{
			"missing":          {missing, "no such file or directory"},
			"fails":            {script("fails", "echo 'unknown command' >&2; exit 1"), "exit status 1: unknown command"},
			"garbage":          {script("garbage", "echo garbage"), "printed no report"},
			"two reports":      {script("two", `echo '[{"verdict":"fixed"},{"verdict":"fixed"}]'`), "printed no report"},
			"exit 2, no error": {script("liar", `echo '[{"verdict":"fixed"}]'; exit 2`), "do not agree"},
			"error but fixed":  {script("liar2", `echo '[{"verdict":"fixed","error":"bad"}]'; exit 2`), "do not agree"},
		} {
			t.Run(name, func(t *testing.T) {
				rep, err := tc.insp.Inspect(ctx, image, verdict.Options{CacheDir: filepath.Join(dir, "cache")})
				require.Nil(t, rep)
				require.ErrorContains(t, err, tc.msg)
				require.ErrorContains(t, err, "no cached inspection in "+filepath.Join(dir, "cache")+" and kata-runtime cannot inspect it: ")
				require.ErrorContains(t, err, "install kata-runtime from the same build beside containerd-shim-kata-v2")
			})
		}
	})
}
