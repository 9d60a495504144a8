package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
)

// writeConfig writes a Kata configuration with the given hypervisor tables
// (name -> kernel) and [submount_guard] body; virtio_fs_daemon is a
// kata-virtiofsd in the same directory, so protections apply, and
// delegate_shim a script that answers --version as Kata 3.2.0's Go shim.
func writeConfig(t *testing.T, tables map[string]string, guard string) string {
	t.Helper()
	dir := t.TempDir()
	daemon := filepath.Join(dir, "kata-virtiofsd")
	require.NoError(t, os.WriteFile(daemon, nil, 0o755))
	shim := filepath.Join(dir, "containerd-shim-kata-v2.upstream")
	require.NoError(t, os.WriteFile(shim, []byte("#!/bin/sh\necho 'Kata Containers containerd shim (Golang): id: \"io.containerd.kata.v2\", version: 3.2.0, commit: test'\n"), 0o755))
	var b strings.Builder
	for _, name := range []string{"qemu", "clh"} {
		if k, ok := tables[name]; ok {
			fmt.Fprintf(&b, "[hypervisor.%s]\npath = \"/usr/bin/qemu-system-x86_64\"\nkernel = %q\nshared_fs = \"virtio-fs\"\nvirtio_fs_daemon = %q\nkernel_params = \"quiet\"\nenable_annotations = [\"kernel\"]\n\n", name, k, daemon)
		}
	}
	fmt.Fprintf(&b, "[agent.kata]\nenable_debug = true\n\n[runtime]\nenable_debug = false\n\n[submount_guard]\nstate_dir = %q\ndelegate_shim = %q\n%s\n", filepath.Join(dir, "state"), shim, guard)
	p := filepath.Join(dir, "configuration.toml")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

func check(t *testing.T, o checkOptions) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	o.Stdout, o.Stderr = &stdout, &stderr
	code := runCheck(context.Background(), o)
	return code, stdout.String(), stderr.String()
}

func notAKernel(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(p, []byte("this is not a kernel\n"), 0o644))
	return p
}

// TestCheckRealKernels predicts start for the kernels test/kernels builds.
func TestCheckRealKernels(t *testing.T) {
	dir := testutil.GuestKernelsDir(t)
	releases := testutil.GuestKernelReleases(t, dir)
	// bzImages (compressed: slow to inspect under -race) for the two main
	// cases, vmlinux for the rest.
	fixed, vulnerable := filepath.Join(dir, "fixed/bzImage"), filepath.Join(dir, "vulnerable/bzImage")
	fixedELF, vulnerableELF := filepath.Join(dir, "fixed/vmlinux"), filepath.Join(dir, "vulnerable/vmlinux")
	cases := []struct {
		name    string
		tables  map[string]string
		guard   string
		strict  bool
		code    int
		stdout  []string
		stderr  []string
		nostder []string
	}{
		{name: "fixed passes", tables: map[string]string{"qemu": fixed}, guard: `on_vulnerable = "refuse"`, strict: true, code: 0,
			stdout: []string{"  image:             " + fixed + "\n", "  verdict:           fixed\n", "  evidence:          btf\n",
				"  version:           6.1.192\n", "  sandbox creation:  allow (protection none)\n"},
			nostder: []string{"ERROR: sandbox", "ERROR: --strict"}},
		{name: "vulnerable and refuse", tables: map[string]string{"qemu": vulnerable}, guard: `on_vulnerable = "refuse"`, code: 1,
			stdout: []string{"  verdict:           vulnerable\n", "  policy:            on_vulnerable = refuse, on_unknown = warn, virtiofs_protection = recover\n",
				"  sandbox creation:  refuse (protection none)\n"},
			stderr: []string{"ERROR: sandbox creation will be refused: guest kernel " + vulnerable + " (" + releases["vulnerable"] + ") lacks the FUSE submount fix"}},
		{name: "vulnerable and warn passes", tables: map[string]string{"qemu": vulnerableELF}, code: 0,
			stdout: []string{"  sandbox creation:  warn (protection recover)\n"}, stderr: []string{"level=warning"}},
		{name: "vulnerable and warn, strict", tables: map[string]string{"qemu": vulnerableELF}, strict: true, code: 1,
			stderr: []string{"ERROR: --strict: guest kernel " + vulnerableELF + " is vulnerable: "}},
		{name: "unknown and strict", tables: map[string]string{"qemu": notAKernel(t)}, strict: true, code: 1,
			stdout: []string{"  verdict:           unknown\n"}, stderr: []string{"is unknown: fix status of guest kernel"}},
		{name: "unknown and refuse", tables: map[string]string{"qemu": notAKernel(t)}, guard: `on_unknown = "refuse"`, code: 1,
			stderr: []string{"ERROR: sandbox creation will be refused: fix status of guest kernel"}},
		{name: "fixed_releases without BTF", tables: map[string]string{"qemu": filepath.Join(dir, "vulnerable-nobtf/vmlinux")},
			guard: fmt.Sprintf("on_vulnerable = \"refuse\"\nfixed_releases = [%q]", releases["vulnerable-nobtf"]), strict: true, code: 0,
			stdout: []string{"  verdict:           fixed\n", "  evidence:          override\n"}},
		{name: "two tables, strictest wins", tables: map[string]string{"qemu": fixedELF, "clh": vulnerableELF}, guard: `on_vulnerable = "refuse"`, code: 1,
			stdout: []string{"  hypervisors:       clh, qemu (Kata picks one at random; the strictest is shown)\n", "  hypervisor:        clh\n",
				"  image:             " + vulnerableELF + "\n"},
			stderr: []string{"ERROR: sandbox creation will be refused"}},
		{name: "two tables, both fixed", tables: map[string]string{"qemu": fixedELF, "clh": filepath.Join(dir, "lying-vulnerable/vmlinux")}, guard: `on_vulnerable = "refuse"`, code: 0,
			stdout: []string{"  hypervisors:       clh, qemu", "  verdict:           fixed\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.tables, tc.guard)
			code, stdout, stderr := check(t, checkOptions{ConfigPath: path, Strict: tc.strict})
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.Contains(t, stdout, "  config:            "+path+" (flag, as Kata's Go runtime 2.x/3.x chooses it)\n")
			require.Contains(t, stdout, "  delegate:          "+filepath.Join(filepath.Dir(path), "containerd-shim-kata-v2.upstream")+": go-3 (Kata Containers containerd shim (Golang): id: \"io.containerd.kata.v2\", version: 3.2.0, commit: test)\n")
			for _, s := range tc.stdout {
				require.Contains(t, stdout, s)
			}
			for _, s := range tc.stderr {
				require.Contains(t, stderr, s)
			}
			for _, s := range tc.nostder {
				require.NotContains(t, stderr, s)
			}
			// check predicts start: the same Decide the shim runs.
			r, _, err := resolveConfig(context.Background(), path)
			require.NoError(t, err)
			pl, err := policy.Decide(context.Background(), policy.Input{Resolved: r, SandboxID: "sb", ContainerType: policy.PodSandbox, Inspector: policy.InspectorFunc(guestkernel.Inspect)})
			require.NoError(t, err)
			require.Contains(t, stdout, fmt.Sprintf("  sandbox creation:  %s (protection %s)\n", pl.Action, pl.Protection))
			if !tc.strict {
				require.Equal(t, pl.Action == plan.Refuse, code == 1)
			}
		})
	}
}

func TestCheckConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	require.NoError(t, os.WriteFile(bad, []byte("[hypervisor.qemu]\nkernel = \"/k\"\nshared_fs = virtio-fs\n"), 0o644))
	missingKernel := writeConfig(t, map[string]string{"qemu": filepath.Join(dir, "no-such-vmlinuz")}, "")
	badGuard := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, `on_vulnerable = "sometimes"`)
	cases := []struct {
		name string
		path string
		msg  string
	}{
		{"syntax error with line:col", bad, bad + ":3:13: invalid TOML: expected value but found \"virtio\" instead"},
		{"missing kernel file", missingKernel, `[hypervisor.qemu] kernel = "` + filepath.Join(dir, "no-such-vmlinuz") + `": file ` + filepath.Join(dir, "no-such-vmlinuz") + ` does not exist`},
		{"bad policy", badGuard, badGuard + `: [submount_guard] on_vulnerable = "sometimes": invalid value; allowed: refuse, warn, off`},
		{"missing config", filepath.Join(dir, "nope.toml"), "configuration file from --config: file " + filepath.Join(dir, "nope.toml") + " does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := check(t, checkOptions{ConfigPath: tc.path})
			require.Equal(t, 1, code)
			require.Contains(t, stderr, tc.msg)
			require.Empty(t, stdout)
		})
	}
}

// TestEnv: without Kata's kata-runtime (none beside writeConfig's
// delegate_shim), env prints the guard's sections alone, says what is
// missing, and succeeds: the CLI is optional.
func TestEnv(t *testing.T) {
	kernel := notAKernel(t)
	path := writeConfig(t, map[string]string{"qemu": kernel}, "on_unknown = \"refuse\"\nfixed_releases = [\"6.1.0-18-amd64\"]")
	dir := filepath.Dir(path)
	missing := "Kata's kata-runtime not found beside delegate_shim " + filepath.Join(dir, "containerd-shim-kata-v2.upstream") +
		": " + filepath.Join(dir, "kata-runtime.upstream") + ": no such file or directory; " + filepath.Join(dir, "kata-runtime") +
		": no such file or directory; install Kata's kata-runtime there, or set [submount_guard] delegate_runtime in " + path + " to its path"
	t.Run("json", func(t *testing.T) {
		var out, errOut bytes.Buffer
		require.NoError(t, runEnv(context.Background(), envOptions{ConfigPath: path, JSON: true, Stdout: &out, Stderr: &errOut}))
		var env EnvInfo
		require.NoError(t, json.Unmarshal(out.Bytes(), &env))
		require.Equal(t, kernel, env.Kernel.Path)
		require.Equal(t, "quiet", env.Kernel.Parameters)
		require.Equal(t, "unknown", env.Kernel.SubmountFix)
		require.Equal(t, "none", env.Kernel.Evidence)
		require.NotEmpty(t, env.Kernel.Reason)
		require.Equal(t, "submount-guard.1", env.Meta.Version)
		require.Equal(t, "refuse", env.SubmountGuard.OnUnknown)
		require.Equal(t, []string{"6.1.0-18-amd64"}, env.SubmountGuard.FixedReleases)
		require.Equal(t, "refuse", env.SubmountGuard.Action)
		require.Equal(t, []string{"qemu"}, env.SubmountGuard.Hypervisors)
		require.Equal(t, "qemu", env.SubmountGuard.Hypervisor)
		require.Equal(t, kernel, env.SubmountGuard.KernelPath)
		require.Equal(t, filepath.Join(dir, "state", "kernel-cache"), env.SubmountGuard.KernelCacheDir)
		require.Equal(t, "go-3", env.SubmountGuard.DelegateKind)
		require.Equal(t, "3.2.0", env.SubmountGuard.DelegateVersion)
		require.Empty(t, env.SubmountGuard.DelegateRuntime)
		require.Equal(t, missing, env.SubmountGuard.DelegateRuntimeError)
		// Kata's sections are Kata's to print: none of ours stands in.
		require.Equal(t, []string{"Kernel", "Meta", "SubmountGuard"}, topKeys(t, out.Bytes()))
		require.Contains(t, out.String(), `"SubmountFix": "unknown"`)
	})
	t.Run("toml by default", func(t *testing.T) {
		var out, errOut bytes.Buffer
		require.NoError(t, runEnv(context.Background(), envOptions{ConfigPath: path, Stdout: &out, Stderr: &errOut}))
		var env EnvInfo
		_, err := toml.Decode(out.String(), &env)
		require.NoError(t, err)
		require.Equal(t, "unknown", env.Kernel.SubmountFix)
		require.Equal(t, missing, env.SubmountGuard.DelegateRuntimeError)
		require.Contains(t, out.String(), "[Kernel]\n")
		require.Contains(t, out.String(), "[SubmountGuard]\n")
	})
	t.Run("bad config", func(t *testing.T) {
		var out bytes.Buffer
		err := runEnv(context.Background(), envOptions{ConfigPath: filepath.Join(t.TempDir(), "missing.toml"), Stdout: &out, Stderr: &out})
		require.ErrorContains(t, err, "does not exist")
	})
}

// topKeys are the names of a JSON object's members, in order.
func topKeys(t *testing.T, data []byte) []string {
	t.Helper()
	ms, err := objectMembers(data)
	require.NoError(t, err)
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

func TestEnvRealKernel(t *testing.T) {
	dir := testutil.GuestKernelsDir(t)
	path := writeConfig(t, map[string]string{"qemu": filepath.Join(dir, "vulnerable/vmlinux")}, "")
	var out, errOut bytes.Buffer
	require.NoError(t, runEnv(context.Background(), envOptions{ConfigPath: path, JSON: true, Stdout: &out, Stderr: &errOut}))
	var env EnvInfo
	require.NoError(t, json.Unmarshal(out.Bytes(), &env))
	require.Equal(t, "vulnerable", env.Kernel.SubmountFix)
	require.Equal(t, "btf", env.Kernel.Evidence)
	require.Equal(t, "6.1.69", env.Kernel.Version)
	require.Equal(t, "warn", env.SubmountGuard.Action)
	require.Equal(t, "recover", env.SubmountGuard.Protection)
}

// TestCheckEnvThroughCLI runs the commands as main wires them: aliases,
// Kata's global --config/--kata-config, flags and exit codes, without Kata's
// kata-runtime (kata_test.go has it).
func TestCheckEnvThroughCLI(t *testing.T) {
	refuse := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, `on_unknown = "refuse"`)
	warn := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, "")
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--config", refuse, "check", "-n"}, 1, "  sandbox creation:  refuse (protection none)\n",
			"ERROR: kata-runtime check failed: the guard's check failed (Kata's check was not run)\n"},
		{[]string{"--kata-config", warn, "kata-check", "--no-network-checks"}, 0, "  Kata's check:      not run: Kata's kata-runtime not found beside delegate_shim ", ""},
		{[]string{"--config", warn, "check", "-n", "-s"}, 1, "  verdict:           unknown\n", "ERROR: --strict"},
		{[]string{"--config", warn, "check", "--check-version-only"}, 1, "", "ERROR: --check-version-only and --only-list-releases are Kata's own check: Kata's kata-runtime not found"},
		{[]string{"--config", warn, "env", "--json"}, 0, `"SubmountFix": "unknown"`, ""},
		{[]string{"--kata-config", warn, "kata-env"}, 0, "[SubmountGuard]\n", ""},
		{[]string{"--config", filepath.Join(t.TempDir(), "missing.toml"), "env"}, 1, "", "kata-runtime: configuration file from --config: file "},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.args...)
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.Contains(t, stdout, tc.stdout)
			require.Contains(t, stderr, tc.stderr)
		})
	}
}

// TestBinaryCheckPredictsStart is the acceptance check: the built
// binary's exit code for `--config FILE check` agrees with the decision the
// shim makes at start, on Debian's own kernels (bookworm: fixed 6.1.x;
// bullseye: 5.10, never fixed).
func TestBinaryCheckPredictsStart(t *testing.T) {
	testutil.RequiresCommand(t, "go")
	bookworm := testutil.RequiresCacheFile(t, "debian-kernels/bookworm-cloud-amd64/vmlinuz")
	bullseye := testutil.RequiresCacheFile(t, "debian-kernels/bullseye-cloud-amd64/vmlinuz")
	bin := buildBinary(t)
	for _, tc := range []struct {
		name, kernel, guard string
		code                int
		verdict             string
	}{
		{"bookworm fixed", bookworm, `on_vulnerable = "refuse"`, 0, "fixed"},
		{"bullseye refused", bullseye, `on_vulnerable = "refuse"`, 1, "vulnerable"},
		{"bullseye warned", bullseye, ``, 0, "vulnerable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, map[string]string{"qemu": tc.kernel}, tc.guard)
			cmd := exec.Command(bin, "--config", path, "check", "--no-network-checks")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			require.Contains(t, stdout.String(), "  verdict:           "+tc.verdict+"\n")

			r, _, err := resolveConfig(context.Background(), path)
			require.NoError(t, err)
			pl, err := policy.Decide(context.Background(), policy.Input{Resolved: r, SandboxID: "sb", ContainerType: policy.PodSandbox, Inspector: policy.InspectorFunc(guestkernel.Inspect)})
			require.NoError(t, err)
			require.Equal(t, pl.Action == plan.Refuse, code == 1, pl.Reason)
		})
	}
}

// TestCheckUnprotected: a configuration whose vulnerable or unknown kernel
// would run without the protection it asks for fails check, naming the key to
// set; one that chose no protection passes and says UNPROTECTED.
func TestCheckUnprotected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		guard  string
		code   int
		stdout string
		stderr string
	}{
		{"protection asked for cannot apply", "", 1, "  sandbox creation:  warn (protection none), UNPROTECTED\n",
			"ERROR: guest kernel KERNEL is unknown and its sandboxes would run unprotected: virtiofs_protection = recover cannot be applied: virtio_fs_daemon DAEMON is not kata-virtiofsd; set virtio_fs_daemon (and valid_virtio_fs_daemon_paths) of [hypervisor.qemu] to kata-virtiofsd's path in CONFIG\n"},
		{"no protection chosen", `virtiofs_protection = "none"`, 0, "  sandbox creation:  warn (protection none), UNPROTECTED\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kernel := notAKernel(t)
			path := writeConfig(t, map[string]string{"qemu": kernel}, tc.guard)
			daemon := filepath.Join(filepath.Dir(path), "virtiofsd")
			require.NoError(t, os.WriteFile(daemon, nil, 0o755))
			require.NoError(t, os.MkdirAll(filepath.Join(filepath.Dir(path), "config.d"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "config.d", "50-daemon.toml"),
				[]byte(fmt.Sprintf("[hypervisor.qemu]\nvirtio_fs_daemon = %q\n", daemon)), 0o644))
			code, stdout, stderr := check(t, checkOptions{ConfigPath: path})
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.Contains(t, stdout, tc.stdout)
			if tc.stderr != "" {
				r := strings.NewReplacer("KERNEL", kernel, "DAEMON", daemon, "CONFIG", path)
				require.Contains(t, stderr, r.Replace(tc.stderr))
			} else {
				require.NotContains(t, stderr, "ERROR: guest kernel")
			}
		})
	}
}
