package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// arm64Image is the smallest image the inspector classifies: the arm64 Image
// header and a banner.
func arm64Image(t *testing.T, release string) string {
	t.Helper()
	b := make([]byte, 64)
	binary.LittleEndian.PutUint64(b[24:], 2)
	copy(b[0x38:], "ARM\x64")
	b = append(b, "\x00Linux version "+release+" (ksg@build) (gcc) #1 SMP PREEMPT Mon Jan  1 00:00:00 UTC 2024\n\x00"...)
	p := filepath.Join(t.TempDir(), "Image-"+release)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// runCLI runs the app as main does and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := newApp(&stdout, &stderr).RunContext(context.Background(), append([]string{"kata-runtime"}, args...))
	code := 0
	if err != nil {
		code = exitCode(&stderr, err)
	}
	return stdout.String(), stderr.String(), code
}

func TestInspectJSON(t *testing.T) {
	fixed := arm64Image(t, "6.1.76")
	vuln := arm64Image(t, "6.1.69")
	old := arm64Image(t, "5.4.1")
	missing := filepath.Join(t.TempDir(), "missing")
	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, bytes.Repeat([]byte("junk"), 100), 0o644))

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		verdicts []verdict.Verdict
		errs     []bool
	}{
		{"all classified", []string{fixed, vuln, old}, 0,
			[]verdict.Verdict{verdict.Fixed, verdict.Vulnerable, verdict.Unaffected}, []bool{false, false, false}},
		{"one missing", []string{fixed, missing}, 2,
			[]verdict.Verdict{verdict.Fixed, verdict.Unknown}, []bool{false, true}},
		{"one unparsable", []string{junk, vuln}, 2,
			[]verdict.Verdict{verdict.Unknown, verdict.Vulnerable}, []bool{true, false}},
		{"fixed release override", []string{"--fixed-release", "6.1.69", "--fixed-release", "other", vuln}, 0,
			[]verdict.Verdict{verdict.Fixed}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"guest-kernel", "inspect", "--json"}, tc.args...)
			stdout, stderr, code := runCLI(t, args...)
			require.Equal(t, tc.code, code, stderr)
			var reports []map[string]any
			require.NoError(t, json.Unmarshal([]byte(stdout), &reports), stdout)
			require.Len(t, reports, len(tc.verdicts))
			for i, r := range reports {
				for _, field := range []string{"path", "format", "arch", "compression", "banner", "release", "version",
					"btf_present", "btf_has_fix", "verdict", "evidence", "reason"} {
					require.Contains(t, r, field)
				}
				require.Equal(t, string(tc.verdicts[i]), r["verdict"])
				_, hasErr := r["error"]
				require.Equal(t, tc.errs[i], hasErr, "%v", r)
			}
			if tc.code == 2 {
				require.Contains(t, stderr, "could not be inspected")
			}
		})
	}
}

func TestInspectHuman(t *testing.T) {
	vuln := arm64Image(t, "6.1.69")
	missing := filepath.Join(t.TempDir(), "missing")
	stdout, _, code := runCLI(t, "--kata-config", "/etc/kata-containers/configuration.toml", "guest-kernel", "inspect", vuln, missing)
	require.Equal(t, 2, code)
	require.Contains(t, stdout, vuln+": vulnerable (evidence: version)\n")
	require.Contains(t, stdout, "  format:      arm64-image, arch arm64, compression none\n")
	require.Contains(t, stdout, "  release:     6.1.69\n")
	require.Contains(t, stdout, "  btf:         absent\n")
	require.Contains(t, stdout, "  reason:      version 6.1.69 lacks the FUSE submount fix")
	require.Contains(t, stdout, missing+": unknown (error)\n  error:       inspect "+missing+": no such file\n")
}

func TestInspectUsage(t *testing.T) {
	_, stderr, code := runCLI(t, "guest-kernel", "inspect", "--json")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "no PATH given")

	_, _, code = runCLI(t, "guest-kernel", "inspect", "--no-such-flag", "x")
	require.Equal(t, 1, code)

	// urfave/cli stops at the first PATH, so a flag after one would be read
	// as a path: a usage error, before any image is read.
	img := arm64Image(t, "6.1.76")
	for _, tc := range []struct {
		args []string
		bad  string
	}{
		{[]string{img, "--json"}, "--json"},
		{[]string{"--json", img, "--fixed-release", "6.1.69", img}, "--fixed-release"},
		{[]string{"--", "-x"}, "-x"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, append([]string{"guest-kernel", "inspect"}, tc.args...)...)
			require.Equal(t, exitUsage, code)
			require.Empty(t, stdout, "no image inspected")
			require.Equal(t, "kata-runtime: guest-kernel inspect: "+strconv.Quote(tc.bad)+" comes after a PATH: flags go before the paths "+
				"(kata-runtime guest-kernel inspect [--json] [--fixed-release R]... PATH...); name a file that starts with '-' as ./NAME\n", stderr)
		})
	}
}

func TestInspectCache(t *testing.T) {
	img := arm64Image(t, "6.6.8")
	cache := filepath.Join(t.TempDir(), "cache")
	for range 2 {
		stdout, _, code := runCLI(t, "guest-kernel", "inspect", "--cache-dir", cache, img)
		require.Equal(t, 0, code)
		require.Contains(t, stdout, ": fixed (evidence: version)")
	}
	ents, err := os.ReadDir(cache)
	require.NoError(t, err)
	require.Len(t, ents, 1)
}

func TestExitCode(t *testing.T) {
	var buf bytes.Buffer
	require.Equal(t, 1, exitCode(&buf, errors.New("boom")))
	require.Equal(t, "kata-runtime: boom\n", buf.String())
}

// buildBinary builds kata-runtime as `make build` does.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kata-runtime")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// TestBinaryExitCodes runs the real binary: main must turn the errors into
// the documented exit codes.
func TestBinaryExitCodes(t *testing.T) {
	testutil.RequiresCommand(t, "go")
	bin := buildBinary(t)
	img := arm64Image(t, "6.1.76")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"guest-kernel", "inspect", img}, 0},
		{[]string{"guest-kernel", "inspect", "--json", img, filepath.Join(t.TempDir(), "nope")}, 2},
		{[]string{"guest-kernel", "inspect"}, 1},
		{[]string{"--version"}, 0},
	} {
		cmd := exec.Command(bin, tc.args...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		require.Equal(t, tc.code, code, "%v: %s", tc.args, out)
	}
}

// TestBinaryRealImages is the acceptance check: the built binary
// gives the right verdict on every real image test/setup provides.
func TestBinaryRealImages(t *testing.T) {
	want := map[string]verdict.Verdict{}
	for rel, v := range map[string]verdict.Verdict{
		"debian-kernels/bookworm-cloud-amd64/vmlinuz": verdict.Fixed,
		"debian-kernels/bullseye-cloud-amd64/vmlinuz": verdict.Vulnerable,
		"debian-kernels/trixie-cloud-amd64/vmlinuz":   verdict.Fixed,
		"debian-kernels/trixie-arm64/vmlinuz":         verdict.Fixed,
		"debian-kernels/trixie-arm64/Image.gz":        verdict.Fixed,
		"debian-kernels/bookworm-ppc64el/vmlinux":     verdict.Fixed,
	} {
		want[testutil.RequiresCacheFile(t, rel)] = v
	}
	dir := testutil.GuestKernelsDir(t)
	for variant, v := range map[string]verdict.Verdict{
		"fixed": verdict.Fixed, "vulnerable": verdict.Vulnerable,
		"lying-fixed": verdict.Vulnerable, "lying-vulnerable": verdict.Fixed,
	} {
		want[filepath.Join(dir, variant, "bzImage")] = v
		want[filepath.Join(dir, variant, "vmlinux")] = v
	}
	want[filepath.Join(dir, "fixed-nobtf", "vmlinux")] = verdict.Fixed
	want[filepath.Join(dir, "vulnerable-nobtf", "vmlinux")] = verdict.Vulnerable

	args := []string{"guest-kernel", "inspect", "--json"}
	for p := range want {
		args = append(args, p)
	}
	stdout, err := exec.Command(buildBinary(t), args...).Output()
	require.NoError(t, err, "exit status 0 expected")
	var reports []verdict.Report
	require.NoError(t, json.Unmarshal(stdout, &reports))
	require.Len(t, reports, len(want))
	for _, r := range reports {
		require.Equal(t, want[r.Path], r.Verdict, "%s: %s", r.Path, r.Reason)
	}
}
