package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
)

// fakeKata is a script in Kata's kata-runtime's place: it records its argv
// (one per line, in PATH.args) and the delegation marker (PATH.env), prints
// PATH.stdout and PATH.stderr, and exits with its code.
type fakeKata string

func writeFakeKata(t *testing.T, path, stdout, stderr string, code int) fakeKata {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$@\" >\"$0.args\"\nprintf '%%s' \"$%s\" >\"$0.env\"\ncat \"$0.stdout\"\ncat \"$0.stderr\" >&2\nexit %d\n", delegatedEnv, code)
	require.NoError(t, os.WriteFile(path+".stdout", []byte(stdout), 0o644))
	require.NoError(t, os.WriteFile(path+".stderr", []byte(stderr), 0o644))
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return fakeKata(path)
}

// args is the argv the script was last run with; nil if it never ran.
func (f fakeKata) args(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(string(f) + ".args")
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// TestFindKataCLI: Kata's kata-runtime is delegate_runtime, or the first of
// kata-runtime.upstream (for a renamed shim) and kata-runtime beside
// delegate_shim that exists and is not this program (by file identity, so a
// link to it under Kata's name is passed over). Not found beside the shim is
// a note; a delegate_runtime that cannot be run is an installation error.
// runtime-rs has no kata-runtime.
func TestFindKataCLI(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	type files map[string]string // name beside the shim -> "exe", "self", "data"
	for _, tc := range []struct {
		name    string
		shim    string // base name of delegate_shim
		runtime string // delegate_runtime's base name in the same directory, if set
		kind    config.DelegateKind
		files   files
		want    string // base name found
		missing []string
		broken  bool
	}{
		{name: "plain kata-runtime", shim: "containerd-shim-kata-v2.upstream", files: files{"kata-runtime": "exe"}, want: "kata-runtime"},
		{name: "renamed with the shim: preferred", shim: "containerd-shim-kata-v2.upstream",
			files: files{"kata-runtime.upstream": "exe", "kata-runtime": "exe"}, want: "kata-runtime.upstream"},
		{name: "shim not renamed: .upstream not looked for", shim: "containerd-shim-kata-v2",
			files: files{"kata-runtime.upstream": "exe"}, missing: []string{"kata-runtime: no such file or directory"}},
		{name: "ours under Kata's name is passed over", shim: "containerd-shim-kata-v2.upstream",
			files: files{"kata-runtime.upstream": "self", "kata-runtime": "exe"}, want: "kata-runtime"},
		{name: "ours under both names", shim: "containerd-shim-kata-v2.upstream",
			files:   files{"kata-runtime.upstream": "self", "kata-runtime": "self"},
			missing: []string{"kata-runtime.upstream is kata-submount-guard's kata-runtime itself", "kata-runtime is kata-submount-guard's kata-runtime itself"}},
		{name: "not executable", shim: "containerd-shim-kata-v2", files: files{"kata-runtime": "data"},
			missing: []string{"kata-runtime is not an executable file"}},
		{name: "none: a note", shim: "containerd-shim-kata-v2.upstream",
			missing: []string{"Kata's kata-runtime not found beside delegate_shim", "kata-runtime.upstream: no such file or directory", "install Kata's kata-runtime there, or set [submount_guard] delegate_runtime in"}},
		{name: "delegate_runtime set", shim: "containerd-shim-kata-v2.upstream", runtime: "kata-runtime.real",
			files: files{"kata-runtime.real": "exe", "kata-runtime": "exe"}, want: "kata-runtime.real"},
		{name: "delegate_runtime missing: broken", shim: "containerd-shim-kata-v2.upstream", runtime: "kata-runtime.real",
			files: files{"kata-runtime": "exe"}, broken: true,
			missing: []string{"Kata's kata-runtime from [submount_guard] delegate_runtime cannot be run: ", "kata-runtime.real: no such file or directory"}},
		{name: "delegate_runtime is ours: broken", shim: "containerd-shim-kata-v2.upstream", runtime: "kata-runtime",
			files: files{"kata-runtime": "self"}, broken: true, missing: []string{"kata-runtime is kata-submount-guard's kata-runtime itself"}},
		{name: "runtime-rs has none", shim: "containerd-shim-kata-v2.upstream", kind: config.DelegateRuntimeRS,
			files: files{"kata-runtime": "exe"}, missing: []string{"Kata's runtime-rs ships no kata-runtime (its tool is kata-ctl"}},
		{name: "runtime-rs with delegate_runtime set", shim: "containerd-shim-kata-v2.upstream", kind: config.DelegateRuntimeRS, runtime: "kata-runtime",
			files: files{"kata-runtime": "exe"}, want: "kata-runtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, what := range tc.files {
				p := filepath.Join(dir, name)
				switch what {
				case "self":
					require.NoError(t, os.Symlink(self, p))
				case "exe":
					writeFakeKata(t, p, "", "", 0)
				default:
					require.NoError(t, os.WriteFile(p, nil, 0o644))
				}
			}
			var g config.Guard
			g.DelegateShim = filepath.Join(dir, tc.shim)
			if tc.runtime != "" {
				g.DelegateRuntime = filepath.Join(dir, tc.runtime)
			}
			kind := tc.kind
			if kind == "" {
				kind = config.DelegateGo4
			}
			k := findKataCLI(&config.Resolved{Path: "/etc/kata-containers/configuration.toml", Guard: g}, kind)
			if tc.want != "" {
				require.Equal(t, kataCLI{Path: filepath.Join(dir, tc.want)}, k)
				return
			}
			require.Empty(t, k.Path)
			require.Equal(t, tc.broken, k.Broken)
			for _, m := range tc.missing {
				require.Contains(t, k.Missing, m)
			}
			require.Contains(t, k.Missing, "/etc/kata-containers/configuration.toml", "names the file to set delegate_runtime in")
		})
	}
}

// TestCheckMergesKata runs check with a stand-in for Kata's kata-runtime
// beside the delegate shim: Kata's output comes first and as it is, the
// guard's section follows and says how Kata's check went, and the exit
// status fails if either part fails, saying which.
func TestCheckMergesKata(t *testing.T) {
	const kataOut, kataErr = "System is capable of running Kata Containers\n", "time=\"x\" level=warning msg=\"kata says\"\n"
	for _, tc := range []struct {
		name     string
		kataCode int
		guard    string
		code     int
		kataRow  string
		summary  string
	}{
		{"both pass", 0, "", 0, "check: passed (its output is above)\n", ""},
		{"Kata fails", 1, "", 1, "check: FAILED (exit status 1; its messages are above)\n",
			"ERROR: kata-runtime check failed: Kata's check failed (the guard's check passed)\n"},
		{"Kata's odd exit status", 3, "", 1, "check: FAILED (exit status 3; its messages are above)\n",
			"ERROR: kata-runtime check failed: Kata's check failed (the guard's check passed)\n"},
		{"guard fails", 0, `on_unknown = "refuse"`, 1, "check: passed (its output is above)\n",
			"ERROR: kata-runtime check failed: the guard's check failed (Kata's check passed)\n"},
		{"both fail", 1, `on_unknown = "refuse"`, 1, "check: FAILED (exit status 1; its messages are above)\n",
			"ERROR: kata-runtime check failed: Kata's check and the guard's check failed\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, tc.guard)
			kata := writeFakeKata(t, filepath.Join(filepath.Dir(path), "kata-runtime"), kataOut, kataErr, tc.kataCode)
			stdout, stderr, code := runCLI(t, "--config", path, "check", "-n")
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.True(t, strings.HasPrefix(stdout, kataOut+"Guest kernel (FUSE submount fix, Linux c4d361f66ac9):\n  Kata's check:      "+string(kata)+" "+tc.kataRow), stdout)
			require.True(t, strings.HasPrefix(stderr, kataErr), stderr)
			require.Equal(t, []string{"--config=" + path, "check", "--no-network-checks"}, kata.args(t))
			if tc.summary == "" {
				require.NotContains(t, stderr, "ERROR")
			} else {
				require.True(t, strings.HasSuffix(stderr, tc.summary), stderr)
			}
		})
	}
}

// TestKataArgs: Kata's global flags and the subcommand's are passed on as
// given (an alias as its flag's name), nothing else.
func TestKataArgs(t *testing.T) {
	path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, `virtiofs_protection = "none"`)
	kata := writeFakeKata(t, filepath.Join(filepath.Dir(path), "kata-runtime"), "", "", 0)
	logFile := filepath.Join(t.TempDir(), "kata.log")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--kata-config", path, "--log", logFile, "--log-format", "json", "--root", "/run/k", "--rootless", "false", "--systemd-cgroup",
			"kata-check", "-v", "-n", "--include-all-releases"},
			[]string{"--config=" + path, "--log=" + logFile, "--log-format=json", "--root=/run/k", "--rootless=false", "--systemd-cgroup",
				"check", "--include-all-releases", "--no-network-checks", "--verbose"}},
		{[]string{"--config", path, "check", "--strict"}, []string{"--config=" + path, "check", "--strict"}},
		{[]string{"--config", path, "check", "--only-list-releases"}, []string{"--config=" + path, "check", "--only-list-releases"}},
		{[]string{"--config", path, "--systemd-cgroup=false", "env"}, []string{"--config=" + path, "--systemd-cgroup=false", "env"}},
		{[]string{"--config", path, "kata-env", "--json"}, []string{"--config=" + path, "env", "--json"}},
	} {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			if err := os.Remove(string(kata) + ".args"); !os.IsNotExist(err) {
				require.NoError(t, err)
			}
			_, _, _ = runCLI(t, tc.args...)
			require.Equal(t, tc.want, kata.args(t))
			env, err := os.ReadFile(string(kata) + ".env")
			require.NoError(t, err)
			require.Equal(t, "1", string(env), "Kata's CLI runs with %s set", delegatedEnv)
		})
	}
}

// TestCheckKataOnly: --check-version-only and --only-list-releases are
// Kata's check alone (no guard section), with its exit status.
func TestCheckKataOnly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kataCode int
		code     int
	}{{"Kata passes", 0, 0}, {"Kata fails", 1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, `on_unknown = "refuse"`)
			writeFakeKata(t, filepath.Join(filepath.Dir(path), "kata-runtime"), "3.2.0;2023-09-01;https://example.invalid\n", "", tc.kataCode)
			stdout, stderr, code := runCLI(t, "--config", path, "check", "--only-list-releases")
			require.Equal(t, tc.code, code, stderr)
			require.Equal(t, "3.2.0;2023-09-01;https://example.invalid\n", stdout)
		})
	}
}

// TestCheckKataMissing: without Kata's CLI, check still prints the guard's
// section and says what is missing; that fails check only when
// delegate_runtime names a CLI that cannot be run.
func TestCheckKataMissing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		guard   string
		code    int
		row     string
		summary string
	}{
		{"none beside the shim", "", 0, "  Kata's check:      not run: Kata's kata-runtime not found beside delegate_shim ", ""},
		{"delegate_runtime missing", `delegate_runtime = "/nonexistent/kata-runtime"`, 1,
			"  Kata's check:      FAILED: Kata's kata-runtime from [submount_guard] delegate_runtime cannot be run: /nonexistent/kata-runtime: no such file or directory; install Kata's kata-runtime there, or set [submount_guard] delegate_runtime in CONFIG to its path\n",
			"ERROR: kata-runtime check failed: Kata's check failed (the guard's check passed)\n"},
		{"runtime-rs", `delegate_kind = "runtime-rs"`, 0,
			"  Kata's check:      not run: Kata's runtime-rs ships no kata-runtime (its tool is kata-ctl: run `kata-ctl check` and `kata-ctl env` for Kata's own checks); set [submount_guard] delegate_runtime in CONFIG to run a Go kata-runtime here\n", ""},
		{"runtime-rs, guard fails", "delegate_kind = \"runtime-rs\"\non_unknown = \"refuse\"", 1, "  Kata's check:      not run: Kata's runtime-rs ships no kata-runtime",
			"ERROR: kata-runtime check failed: the guard's check failed (Kata's check was not run)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, tc.guard)
			if strings.Contains(tc.guard, "runtime-rs") {
				// runtime-rs needs the table named.
				require.NoError(t, os.Mkdir(filepath.Join(filepath.Dir(path), "config.d"), 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "config.d", "10-rs.toml"), []byte("[runtime]\nhypervisor_name = \"qemu\"\n"), 0o644))
			}
			stdout, stderr, code := runCLI(t, "--config", path, "check", "-n")
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.Contains(t, stdout, strings.ReplaceAll(tc.row, "CONFIG", path))
			require.Contains(t, stdout, "  sandbox creation:  ")
			if tc.summary != "" {
				require.True(t, strings.HasSuffix(stderr, tc.summary), stderr)
			} else {
				require.NotContains(t, stderr, "ERROR")
			}
		})
	}
	t.Run("started by ours as Kata's", func(t *testing.T) {
		t.Setenv(delegatedEnv, "1")
		path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, "")
		for _, cmd := range []string{"check", "env"} {
			stdout, stderr, code := runCLI(t, "--config", path, cmd)
			require.Equal(t, 1, code)
			require.Empty(t, stdout, "no section of its own")
			require.Contains(t, stderr, "kata-submount-guard's kata-runtime was started as Kata's own by kata-submount-guard's kata-runtime ("+delegatedEnv+"=1): [submount_guard] delegate_runtime runs ours again")
		}
	})
}

// Kata 4.1.0's env output on this machine, shortened: the shape the merge
// must keep (tables, subtables, key order, two-space indent).
const (
	kataEnvTOML = `[Kernel]
  Path = "/k"
  Parameters = "quiet"

[Meta]
  Version = "1.0.27"

[Runtime]
  Path = "/opt/kata/bin/kata-runtime"
  [Runtime.Config]
    Path = "/etc/kata-containers/configuration.toml"

[Agent]
  Debug = false
`
	kataEnvJSON = `{
  "Kernel": {
    "Path": "/k",
    "Parameters": "quiet"
  },
  "Meta": {
    "Version": "1.0.27"
  },
  "Runtime": {
    "Path": "/opt/kata/bin/kata-runtime",
    "Config": {
      "Path": "/etc/kata-containers/configuration.toml"
    }
  },
  "Agent": {
    "Debug": false
  }
}
`
)

// TestEnvMergesKata: env's output is Kata's with the guard's fields added to
// its Kernel section, the format suffix on Meta.Version and SubmountGuard
// last; when Kata's env fails or prints what cannot be extended, the
// guard's sections are printed alone and env fails naming Kata's.
func TestEnvMergesKata(t *testing.T) {
	for _, tc := range []struct {
		name     string
		json     bool
		kataOut  string
		kataCode int
		want     string // exact output up to the SubmountGuard section
		err      string
	}{
		{name: "toml", kataOut: kataEnvTOML, want: `[Kernel]
  Path = "/k"
  Parameters = "quiet"
  Version = ""
  SubmountFix = "unknown"
  Evidence = "none"
  Reason = REASON

[Meta]
  Version = "1.0.27-submount-guard.1"

[Runtime]
  Path = "/opt/kata/bin/kata-runtime"
  [Runtime.Config]
    Path = "/etc/kata-containers/configuration.toml"

[Agent]
  Debug = false

[SubmountGuard]
`},
		{name: "toml: Kata's key of ours replaced in place, missing table added", kataOut: "[Kernel]\n  Version = \"kata's\"\n  Path = \"/k\"\n\n[Agent]\n  Debug = false\n", want: `[Kernel]
  Version = ""
  Path = "/k"
  SubmountFix = "unknown"
  Evidence = "none"
  Reason = REASON

[Agent]
  Debug = false

[Meta]
  Version = "submount-guard.1"

[SubmountGuard]
`},
		{name: "json", json: true, kataOut: kataEnvJSON, want: `{
  "Kernel": {
    "Path": "/k",
    "Parameters": "quiet",
    "Version": "",
    "SubmountFix": "unknown",
    "Evidence": "none",
    "Reason": REASON
  },
  "Meta": {
    "Version": "1.0.27-submount-guard.1"
  },
  "Runtime": {
    "Path": "/opt/kata/bin/kata-runtime",
    "Config": {
      "Path": "/etc/kata-containers/configuration.toml"
    }
  },
  "Agent": {
    "Debug": false
  },
  "SubmountGuard": {
`},
		{name: "Kata fails", kataOut: "", kataCode: 1, err: "Kata's env failed: KATA env: exit status 1; only the guard's sections are printed"},
		{name: "Kata prints no TOML", kataOut: "Kata Containers\n[[", err: "Kata's env failed: its output (KATA env) cannot be extended: Kata's env: toml: "},
		{name: "Kata prints a SubmountGuard table", kataOut: kataEnvTOML + "\n[SubmountGuard]\n  Action = \"kata's\"\n",
			err: "Kata's env failed: its output (KATA env) cannot be extended: Kata's env with ours added is not TOML: "},
		{name: "Kata prints no JSON object", json: true, kataOut: "[1]\n", err: "Kata's env failed: its output (KATA env --json) cannot be extended: Kata's env --json: not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, map[string]string{"qemu": notAKernel(t)}, "")
			kata := writeFakeKata(t, filepath.Join(filepath.Dir(path), "kata-runtime"), tc.kataOut, "kata's stderr\n", tc.kataCode)
			var out, errOut bytes.Buffer
			o := envOptions{ConfigPath: path, JSON: tc.json, KataArgs: []string{"env"}, Stdout: &out, Stderr: &errOut}
			if tc.json {
				o.KataArgs = append(o.KataArgs, "--json")
			}
			err := runEnv(context.Background(), o)
			require.True(t, strings.HasPrefix(errOut.String(), "kata's stderr\n"), "Kata's stderr passes through, first: %s", errOut.String())
			var env struct {
				Kernel        KernelInfo
				SubmountGuard GuardInfo
			}
			if tc.json {
				require.NoError(t, json.Unmarshal(out.Bytes(), &env), out.String())
			} else {
				_, derr := toml.Decode(out.String(), &env)
				require.NoError(t, derr, out.String())
			}
			require.Equal(t, "unknown", env.Kernel.SubmountFix)
			require.Equal(t, "warn", env.SubmountGuard.Action)
			require.Equal(t, string(kata), env.SubmountGuard.DelegateRuntime)
			if tc.err != "" {
				// No --config was given: Kata's CLI is told the file ours judged.
				require.ErrorContains(t, err, strings.ReplaceAll(tc.err, "KATA", string(kata)+" --config="+path))
				require.Contains(t, env.SubmountGuard.DelegateRuntimeError, string(kata))
				return
			}
			require.NoError(t, err)
			require.Empty(t, env.SubmountGuard.DelegateRuntimeError)
			reason, _ := json.Marshal(env.Kernel.Reason)
			want := strings.ReplaceAll(tc.want, "REASON", string(reason))
			require.True(t, strings.HasPrefix(out.String(), want), "got:\n%s\nwant prefix:\n%s", out.String(), want)
		})
	}
}

// TestWithConfig: Kata's CLI is told the file the guard judged unless the
// command line named one, so both halves of the report are about one file.
func TestWithConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"none named: ours first", []string{"--log=/l", "check"}, []string{"--config=/judged.toml", "--log=/l", "check"}},
		{"--config named: kept", []string{"--config=/x.toml", "env"}, []string{"--config=/x.toml", "env"}},
		{"--kata-config named: kept", []string{"--kata-config=/x.toml", "env"}, []string{"--kata-config=/x.toml", "env"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, withConfig(tc.args, "/judged.toml"))
		})
	}
}
