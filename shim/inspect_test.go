package shim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

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
		kernels := testutil.GuestKernelsDir(t)
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

	t.Run("an inspector that cannot inspect is an installation error", func(t *testing.T) {
		dir := t.TempDir()
		image := filepath.Join(dir, "vmlinuz")
		require.NoError(t, os.WriteFile(image, []byte("x"), 0o644))
		cacheDir := filepath.Join(dir, "cache")
		script := func(name, body string, mode os.FileMode) kernelInspector {
			p := filepath.Join(dir, name)
			text := "#!/bin/sh\n" + body + "\n"
			if body == "" {
				text = "\x7fELF, but no more"
			}
			require.NoError(t, os.WriteFile(p, []byte(text), mode))
			return kernelInspector{command: p}
		}
		// Kata's own kata-runtime (urfave/cli v1) on a command it lacks.
		kata := script("kata", `echo "No help topic for 'guest-kernel'" >&2; exit 3`, 0o755)
		for name, tc := range map[string]struct {
			insp    kernelInspector
			problem string
		}{
			"missing":          {missing, "does not exist"},
			"not executable":   {script("noexec", "exit 0", 0o644), "is not executable (permission denied)"},
			"not a program":    {script("elf", "", 0o755), "cannot be run (exec format error)"},
			"Kata's own":       {kata, "is not kata-submount-guard's kata-runtime or failed (exit status 3: No help topic for 'guest-kernel')"},
			"fails":            {script("fails", "echo 'unknown command' >&2; exit 1", 0o755), "is not kata-submount-guard's kata-runtime or failed (exit status 1: unknown command)"},
			"crashes":          {script("crashes", "kill -SEGV $$", 0o755), "crashed (signal: segmentation fault)"},
			"garbage":          {script("garbage", "echo garbage", 0o755), `printed no report for one image (invalid character 'g' looking for beginning of value): "garbage\n"`},
			"exit 2, garbage":  {script("garbage2", "echo garbage; exit 2", 0o755), "printed no report for one image"},
			"two reports":      {script("two", `echo '[{"verdict":"fixed"},{"verdict":"fixed"}]'`, 0o755), "printed no report for one image (2 reports)"},
			"exit 2, no error": {script("liar", `echo '[{"verdict":"fixed"}]'; exit 2`, 0o755), `reported verdict fixed, error "" and exit status 2, which do not agree`},
			"error but fixed":  {script("liar2", `echo '[{"verdict":"fixed","error":"bad"}]'; exit 2`, 0o755), `reported verdict fixed, error "bad" and exit status 2, which do not agree`},
			"error, exit 0":    {script("liar3", `echo '[{"verdict":"unknown","error":"bad"}]'`, 0o755), `reported verdict unknown, error "bad" and exit status 0, which do not agree`},
		} {
			t.Run(name, func(t *testing.T) {
				rep, err := tc.insp.Inspect(ctx, image, verdict.Options{CacheDir: cacheDir})
				require.Nil(t, rep)
				var ie *policy.InspectorError
				require.ErrorAs(t, err, &ie)
				require.True(t, errdefs.IsFailedPrecondition(err))
				msg := err.Error()
				prefix := "guest kernel " + image + " cannot be checked: it is not in the inspection cache " + cacheDir +
					" and the inspector " + tc.insp.command + " " + tc.problem
				require.True(t, strings.HasPrefix(msg, prefix), "%s\ndoes not start with\n%s", msg, prefix)
				require.True(t, strings.HasSuffix(msg, "; install kata-submount-guard's kata-runtime, from the same build as "+
					"containerd-shim-kata-v2, as "+tc.insp.command+": failed precondition"), msg)
				require.NotContains(t, msg, "\n")
			})
		}
	})

	t.Run("an inspector that hangs is stopped at the deadline", func(t *testing.T) {
		dir := t.TempDir()
		image := filepath.Join(dir, "vmlinuz")
		require.NoError(t, os.WriteFile(image, []byte("x"), 0o644))
		for name, body := range map[string]string{
			"hangs":                      "sleep 600",
			"its child holds the output": "sleep 600 & wait",
		} {
			t.Run(name, func(t *testing.T) {
				p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
				require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
				insp := kernelInspector{command: p, timeout: 200 * time.Millisecond}
				start := time.Now()
				rep, err := insp.Inspect(ctx, image, verdict.Options{})
				require.Nil(t, rep)
				var ie *policy.InspectorError
				require.ErrorAs(t, err, &ie)
				require.EqualError(t, err, "guest kernel "+image+" cannot be checked: the inspector "+p+" did not finish within 200ms, and nothing was started; "+
					"make sure the image can be read (a hung storage mount?) and retry: unavailable")
				require.Less(t, time.Since(start), 30*time.Second, "returned long before the hung inspector would have ended")
			})
		}
	})

	t.Run("the inspector is looked for beside the shim's real executable", func(t *testing.T) {
		self, err := os.Executable()
		require.NoError(t, err)
		image := filepath.Join(t.TempDir(), "vmlinuz")
		require.NoError(t, os.WriteFile(image, []byte("x"), 0o644))
		_, err = kernelInspector{}.Inspect(ctx, image, verdict.Options{})
		beside := filepath.Join(filepath.Dir(self), "kata-runtime")
		require.EqualError(t, err, "guest kernel "+image+" cannot be checked: there is no inspection cache and the inspector "+beside+
			" (looked for beside the shim's executable "+self+") does not exist; install kata-submount-guard's kata-runtime, from the same build as "+
			"containerd-shim-kata-v2, as "+beside+": failed precondition")
	})
}
