package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// kataTags are the Kata releases test/setup/70-kata.sh builds into
// $KSG_CACHE/kata/<tag>/bin.
var kataTags = []string{"3.0.2", "3.1.3", "3.2.0", "3.12.0", "3.32.0", "4.1.0"}

// realKata is one Kata release's built shim and kata-runtime.
type realKata struct{ shim, cli string }

func requireKata(t *testing.T, tag string) realKata {
	t.Helper()
	return realKata{
		shim: testutil.RequiresCacheFile(t, filepath.Join("kata", tag, "bin", "containerd-shim-kata-v2")),
		cli:  testutil.RequiresCacheFile(t, filepath.Join("kata", tag, "bin", "kata-runtime")),
	}
}

// writeKataConfig writes a configuration both Kata's kata-runtime and ours
// load: one hypervisor table whose files exist, Kata's shim of the tag as
// delegate_shim, its kata-runtime as delegate_runtime. The kernel is not one
// (verdict unknown) and the protection none, so the guard's part passes.
// Kata's qemu table needs /dev/vhost-vsock (absent here: Kata fails); clh
// does not.
func writeKataConfig(t *testing.T, k realKata, hypervisor string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.img")
	require.NoError(t, os.WriteFile(img, []byte("image"), 0o644))
	qemu := testutil.RequiresCommand(t, "qemu-system-x86_64")
	p := filepath.Join(dir, "configuration.toml")
	require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(`[hypervisor.%s]
path = %q
kernel = %q
image = %q
shared_fs = "virtio-fs"
virtio_fs_daemon = %q

[agent.kata]

[runtime]

[submount_guard]
virtiofs_protection = "none"
delegate_shim = %q
delegate_runtime = %q
state_dir = %q
`, hypervisor, qemu, notAKernel(t), img, qemu, k.shim, k.cli, filepath.Join(dir, "state"))), 0o644))
	return p
}

type ran struct {
	stdout, stderr string
	code           int
}

func runCmd(t *testing.T, cmd *exec.Cmd) ran {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return ran{stdout.String(), stderr.String(), code}
}

// logLines are the lines of a logrus text log, without what changes from
// run to run (time, pid), sorted: Kata checks modules in map order.
func logLines(s string) []string {
	re := regexp.MustCompile(`time="[^"]*" | pid=[0-9]+`)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(re.ReplaceAllString(s, "")), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// TestCheckWithRealKata runs Kata's own kata-runtime of each built tag as
// delegate_runtime and compares with running it alone: what Kata prints
// comes first and unchanged, and the exit status is Kata's failure or the
// guard's. Here Kata's check fails (no vmx/svm, no vhost modules; with the
// qemu table already at /dev/vhost-vsock); where it passes, check passes.
func TestCheckWithRealKata(t *testing.T) {
	for _, tag := range kataTags {
		for _, hypervisor := range []string{"clh", "qemu"} {
			t.Run(tag+"/"+hypervisor, func(t *testing.T) {
				k := requireKata(t, tag)
				path := writeKataConfig(t, k, hypervisor)
				alone := runCmd(t, exec.Command(k.cli, "--config="+path, "check", "--no-network-checks"))

				stdout, stderr, code := runCLI(t, "--config", path, "check", "-n")
				require.True(t, strings.HasPrefix(stdout, alone.stdout+"Guest kernel (FUSE submount fix, Linux c4d361f66ac9):\n"), "stdout:\n%s\nKata's alone:\n%s", stdout, alone.stdout)
				require.Subset(t, logLines(stderr), logLines(alone.stderr), "Kata's messages, as Kata prints them")
				require.Contains(t, stdout, "  sandbox creation:  warn (protection none), UNPROTECTED\n")
				if alone.code == 0 {
					require.Equal(t, 0, code, stderr)
					require.Contains(t, stdout, "  Kata's check:      "+k.cli+" check: passed (its output is above)\n")
					return
				}
				require.Equal(t, 1, code)
				require.Contains(t, stdout, fmt.Sprintf("  Kata's check:      %s check: FAILED (exit status %d; its messages are above)\n", k.cli, alone.code))
				require.True(t, strings.HasSuffix(stderr, "ERROR: kata-runtime check failed: Kata's check failed (the guard's check passed)\n"), stderr)
			})
		}
	}
}

// withoutVarying drops from a decoded env what changes from run to run.
func withoutVarying(env map[string]any) {
	if host, ok := env["Host"].(map[string]any); ok {
		delete(host, "Memory")
	}
}

// requireMergedEnv checks merged against Kata's env output alone: every
// section and value of Kata's, ours added to Kernel, the suffix on
// Meta.Version, SubmountGuard last.
func requireMergedEnv(t *testing.T, k realKata, alone, merged map[string]any, order, aloneOrder []string) {
	t.Helper()
	require.Equal(t, append(aloneOrder, "SubmountGuard"), order, "Kata's sections in Kata's order, ours last")
	guard := merged["SubmountGuard"].(map[string]any)
	require.Equal(t, k.cli, guard["DelegateRuntime"])
	require.Equal(t, "", guard["DelegateRuntimeError"])
	kernel := merged["Kernel"].(map[string]any)
	require.Equal(t, "unknown", kernel["SubmountFix"])
	require.Equal(t, "none", kernel["Evidence"])
	for _, key := range []string{"Version", "SubmountFix", "Evidence", "Reason"} {
		delete(kernel, key)
	}
	meta := merged["Meta"].(map[string]any)
	require.Equal(t, alone["Meta"].(map[string]any)["Version"].(string)+envFormatSuffix, meta["Version"])
	meta["Version"] = alone["Meta"].(map[string]any)["Version"]
	delete(merged, "SubmountGuard")
	withoutVarying(alone)
	withoutVarying(merged)
	require.Equal(t, alone, merged)
}

// tomlTables are the top-level tables of TOML text, in order.
func tomlTables(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if m := tomlHeader.FindStringSubmatch(l); m != nil && !strings.Contains(m[1], ".") {
			out = append(out, m[1])
		}
	}
	return out
}

// TestEnvWithRealKata: env (TOML) is Kata's own env output of each built tag
// with ours merged in; when Kata's env fails (qemu here: no vsock), env
// fails too, with Kata's message and the guard's sections alone.
func TestEnvWithRealKata(t *testing.T) {
	for _, tag := range kataTags {
		for _, hypervisor := range []string{"clh", "qemu"} {
			t.Run(tag+"/"+hypervisor, func(t *testing.T) {
				k := requireKata(t, tag)
				path := writeKataConfig(t, k, hypervisor)
				alone := runCmd(t, exec.Command(k.cli, "--config="+path, "env"))

				stdout, stderr, code := runCLI(t, "--config", path, "env")
				if alone.code != 0 {
					require.Equal(t, 1, code)
					require.True(t, strings.HasPrefix(stderr, alone.stderr), "stderr:\n%s\nKata's alone:\n%s", stderr, alone.stderr)
					require.Contains(t, stderr, "kata-runtime: Kata's env failed: "+k.cli+" --config="+path+" env: exit status ")
					var env EnvInfo
					_, err := toml.Decode(stdout, &env)
					require.NoError(t, err)
					require.Equal(t, "unknown", env.Kernel.SubmountFix)
					require.Contains(t, env.SubmountGuard.DelegateRuntimeError, "exit status")
					return
				}
				require.Equal(t, 0, code, stderr)
				var a, m map[string]any
				_, err := toml.Decode(alone.stdout, &a)
				require.NoError(t, err)
				_, err = toml.Decode(stdout, &m)
				require.NoError(t, err, stdout)
				requireMergedEnv(t, k, a, m, tomlTables(stdout), tomlTables(alone.stdout))
			})
		}
	}
}

// TestEnvJSONWithRealKata runs the built binary: Kata's env --json logs to
// syslog (its configuration logs are not silenced when env has a flag) and
// fails on a host without one ("Unix syslog delivery error"). With a syslog
// (a private /dev/log) ours is Kata's JSON with ours merged; without, both
// fail and ours prints the guard's sections alone.
func TestEnvJSONWithRealKata(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "go")
	bin := buildBinary(t)
	for _, tag := range kataTags {
		t.Run(tag, func(t *testing.T) {
			k := requireKata(t, tag)
			path := writeKataConfig(t, k, "clh")
			t.Run("with syslog", func(t *testing.T) {
				cmd := exec.Command(k.cli, "--config="+path, "env", "--json")
				testutil.PrivateSyslog(t, cmd)
				alone := runCmd(t, cmd)
				require.Equal(t, 0, alone.code, alone.stderr)
				cmd = exec.Command(bin, "--config", path, "env", "--json")
				testutil.PrivateSyslog(t, cmd)
				merged := runCmd(t, cmd)
				require.Equal(t, 0, merged.code, merged.stderr)
				var a, m map[string]any
				require.NoError(t, json.Unmarshal([]byte(alone.stdout), &a))
				require.NoError(t, json.Unmarshal([]byte(merged.stdout), &m), merged.stdout)
				requireMergedEnv(t, k, a, m, topKeys(t, []byte(merged.stdout)), topKeys(t, []byte(alone.stdout)))
			})
			t.Run("without syslog", func(t *testing.T) {
				cmd := exec.Command(k.cli, "--config="+path, "env", "--json")
				testutil.NoSyslog(t, cmd)
				alone := runCmd(t, cmd)
				require.NotEqual(t, 0, alone.code, "Kata's env --json needs a syslog: %s", alone.stdout)
				cmd = exec.Command(bin, "--config", path, "env", "--json")
				testutil.NoSyslog(t, cmd)
				merged := runCmd(t, cmd)
				require.Equal(t, 1, merged.code)
				require.True(t, strings.HasPrefix(merged.stderr, alone.stderr), merged.stderr)
				require.Contains(t, merged.stderr, "kata-runtime: Kata's env failed: ")
				require.Equal(t, []string{"Kernel", "Meta", "SubmountGuard"}, topKeys(t, []byte(merged.stdout)))
			})
		})
	}
}

// TestDelegateRuntimeIsOurs runs the built binary with our own kata-runtime
// in Kata's place: as a link under Kata's name it is passed over (file
// identity); behind a wrapper script, the run it starts refuses to go on,
// and check fails naming Kata's part.
func TestDelegateRuntimeIsOurs(t *testing.T) {
	testutil.RequiresCommand(t, "go")
	bin := buildBinary(t)
	t.Run("link under Kata's name", func(t *testing.T) {
		path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, "")
		link := filepath.Join(filepath.Dir(path), "kata-runtime")
		require.NoError(t, os.Link(bin, link))
		r := runCmd(t, exec.Command(bin, "--config", path, "check"))
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "  Kata's check:      not run: Kata's kata-runtime not found beside delegate_shim ")
		require.Contains(t, r.stdout, link+" is kata-submount-guard's kata-runtime itself; ")
	})
	t.Run("wrapper", func(t *testing.T) {
		path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, "")
		wrapper := filepath.Join(filepath.Dir(path), "kata-runtime")
		require.NoError(t, os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+bin+" \"$@\"\n"), 0o755))
		r := runCmd(t, exec.Command(bin, "--config", path, "check"))
		require.Equal(t, 1, r.code)
		require.Equal(t, 1, strings.Count(r.stdout, "Guest kernel (FUSE submount fix"), "one section: %s", r.stdout)
		require.Contains(t, r.stderr, "ERROR: kata-submount-guard's kata-runtime was started as Kata's own by kata-submount-guard's kata-runtime ("+delegatedEnv+"=1)")
		require.True(t, strings.HasSuffix(r.stderr, "ERROR: kata-runtime check failed: Kata's check failed (the guard's check passed)\n"), r.stderr)
	})
}
