package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// writeConfig writes dir/configuration.toml: a QEMU hypervisor booting
// kernel over virtio-fs, and a [submount_guard] table with delegate,
// stateDir and the guard lines given.
// writeFakeKataShim writes an executable that answers --version as Kata's Go
// shim of that version does; the tests replace exec, so it never runs
// otherwise.
func writeFakeKataShim(tb testing.TB, path, version string) {
	tb.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho 'Kata Containers containerd shim (Golang): id: \"io.containerd.kata.v2\", version: %s, commit: test'\n", version)
	require.NoError(tb, os.WriteFile(path, []byte(script), 0o755))
}

// quiet is a context whose logger discards: the shim's logger writes to the
// bundle's FIFO and syslog only, never to the test's output.
func quiet() context.Context {
	l := logrus.New()
	l.Out = io.Discard
	return log.WithLogger(context.Background(), logrus.NewEntry(l))
}

// sandboxBundle makes a pod sandbox's bundle the working directory, as
// containerd does for start, and returns it with an empty stdin (no runtime
// options).
func sandboxBundle(t *testing.T) (string, *os.File) {
	t.Helper()
	bundle := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bundle, specFile), []byte(`{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`), 0o644))
	t.Chdir(bundle)
	stdin, err := os.Open(os.DevNull)
	require.NoError(t, err)
	t.Cleanup(func() { stdin.Close() })
	return bundle, stdin
}

func writeConfig(tb testing.TB, dir, kernel, delegate, stateDir string, guard ...string) string {
	tb.Helper()
	cfg := filepath.Join(dir, "configuration.toml")
	body := fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\nshared_fs = \"virtio-fs\"\nvirtio_fs_daemon = \"/opt/kata/libexec/kata-virtiofsd\"\n"+
		"[submount_guard]\ndelegate_shim = %q\nstate_dir = %q\n", kernel, delegate, stateDir)
	for _, line := range guard {
		body += line + "\n"
	}
	require.NoError(tb, os.WriteFile(cfg, []byte(body), 0o644))
	return cfg
}

// TestDelete: delete removes the plan of the sandbox it names, never
// another's, and hands off with argv and env untouched; the delegate and
// state directory come from start's note, or else from the configuration.
func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		name      string
		note      bool
		id        string
		wantPlans []string // plans left afterwards
	}{
		{name: "sandbox, note from start", note: true, id: "sb", wantPlans: []string{"other"}},
		{name: "sandbox, no note: configuration", id: "sb", wantPlans: []string{"other"}},
		{name: "joining container", note: true, id: "ctr", wantPlans: []string{"other", "sb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			stateDir := filepath.Join(dir, "state")
			delegate := filepath.Join(dir, "delegate")
			writeFakeKataShim(t, delegate, "3.2.0")
			cfg := writeConfig(t, dir, delegate, delegate, stateDir)
			for _, id := range []string{"sb", "other"} {
				require.NoError(t, plan.Write(stateDir, &plan.Plan{SandboxID: id, Action: plan.Allow, Protection: protection.None}))
			}
			bundle := filepath.Join(dir, "bundle")
			require.NoError(t, os.MkdirAll(bundle, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(bundle, specFile), []byte(`{"annotations":{}}`), 0o644))
			env := []string{"PATH=/usr/bin", "TTRPC_ADDRESS=/run/c.sock.ttrpc"}
			if tc.note {
				require.NoError(t, writeNote(bundle, handoffNote{ID: tc.id, SandboxID: "sb", ConfigPath: cfg, DelegateShim: delegate, StateDir: stateDir}))
			} else {
				env = append(env, "KATA_CONF_FILE="+cfg)
			}

			args := []string{"/usr/bin/containerd-shim-kata-v2", "-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", tc.id, "-bundle", bundle, "delete"}
			var gotPath string
			var gotArgs, gotEnv []string
			var stderr strings.Builder
			s := &Shim{Args: args, Env: env, Stdin: os.Stdin, Stderr: &stderr,
				Exec: func(path string, argv, envv []string) error {
					gotPath, gotArgs, gotEnv = path, argv, envv
					return os.ErrProcessDone // stands for "exec returned"
				}}
			require.Equal(t, 1, s.Run(quiet()))
			require.Equal(t, delegate, gotPath, stderr.String())
			require.Equal(t, args, gotArgs)
			require.Equal(t, env, gotEnv)

			entries, err := os.ReadDir(stateDir)
			require.NoError(t, err)
			var left []string
			for _, e := range entries {
				if !e.IsDir() { // caches live in directories beside the plans
					left = append(left, strings.TrimSuffix(e.Name(), ".json"))
				}
			}
			require.Equal(t, tc.wantPlans, left)
		})
	}
}

// TestVersionWithoutConfiguration: -v and -info ask about the delegate, not a
// sandbox, so where no Kata configuration file exists they go to the default
// delegate_shim; everything else still needs the configuration.
func TestVersionWithoutConfiguration(t *testing.T) {
	dir := t.TempDir()
	delegate := filepath.Join(dir, "containerd-shim-kata-v2.upstream")
	writeFakeKataShim(t, delegate, "3.2.0")
	noDefaults := []string{filepath.Join(dir, "etc", "configuration.toml"), filepath.Join(dir, "share", "configuration.toml")}
	broken := filepath.Join(dir, "broken.toml")
	require.NoError(t, os.WriteFile(broken, []byte("[submount_guard]\non_unknown = \"maybe\"\n"), 0o644))

	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		handOff bool
		err     string
	}{
		{name: "-v", args: []string{"-v"}, handOff: true},
		{name: "-info", args: []string{"-info"}, handOff: true},
		{name: "-v, KATA_CONF_FILE names no file", args: []string{"-v"}, env: []string{"KATA_CONF_FILE=" + filepath.Join(dir, "nope.toml")}, handOff: true},
		{name: "-v, configuration invalid", args: []string{"-v"}, env: []string{"KATA_CONF_FILE=" + broken},
			err: `cannot find the delegate shim: ` + broken + `: [submount_guard] on_unknown = "maybe": invalid value`},
		{name: "delete", args: []string{"-id", "sb", "-bundle", dir, "delete"},
			err: "cannot find the delegate shim: no Kata configuration file: none of " + strings.Join(noDefaults, ", ") + " exists"},
		{name: "unknown action", args: []string{"-id", "sb", "frobnicate"},
			err: "cannot find the delegate shim: no Kata configuration file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"/usr/bin/containerd-shim-kata-v2"}, tc.args...)
			env := append([]string{"PATH=/usr/bin"}, tc.env...)
			var gotPath string
			var gotArgs, gotEnv []string
			var stderr strings.Builder
			s := &Shim{Args: args, Env: env, Stdin: os.Stdin, Stderr: &stderr,
				DefaultConfigPaths: noDefaults, DefaultDelegate: delegate,
				Exec: func(path string, argv, envv []string) error {
					gotPath, gotArgs, gotEnv = path, argv, envv
					return os.ErrProcessDone // stands for "exec returned"
				}}
			require.Equal(t, 1, s.Run(quiet()))
			if !tc.handOff {
				require.Empty(t, gotPath, "handed off")
				require.Contains(t, stderr.String(), ErrorPrefix+tc.err)
				return
			}
			require.Equal(t, delegate, gotPath, stderr.String())
			require.Equal(t, args, gotArgs)
			require.Equal(t, env, gotEnv)
		})
	}

	t.Run("-v, default delegate missing", func(t *testing.T) {
		missing := filepath.Join(dir, "no-such-shim")
		var stderr strings.Builder
		s := &Shim{Args: []string{"containerd-shim-kata-v2", "-v"}, Env: []string{"PATH=/usr/bin"}, Stdin: os.Stdin, Stderr: &stderr,
			DefaultConfigPaths: noDefaults, DefaultDelegate: missing,
			Exec: func(string, []string, []string) error { t.Fatal("handed off"); return nil }}
		require.Equal(t, 1, s.Run(quiet()))
		require.Equal(t, ErrorPrefix+"delegate shim "+missing+" (the default delegate_shim, as no Kata configuration file was found) cannot be used: "+
			"no such file or directory; install Kata's upstream containerd-shim-kata-v2 there or point delegate_shim at it: not found", stderr.String())
	})
}

// TestStartWithoutInspector: a sandbox start whose kernel is not cached and
// whose inspector is missing fails with one line saying what to install,
// whatever on_unknown says, and leaves nothing behind: under the default
// on_unknown = warn an unknown verdict would start a kernel that
// on_vulnerable = refuse must stop.
func TestStartWithoutInspector(t *testing.T) {
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	delegate := filepath.Join(dir, "delegate")
	writeFakeKataShim(t, delegate, "3.2.0")
	inspector := filepath.Join(dir, "bin", "kata-runtime")
	for _, guard := range []string{"on_vulnerable = \"refuse\"", "on_unknown = \"off\""} {
		t.Run(guard, func(t *testing.T) {
			cfg := writeConfig(t, t.TempDir(), kernel, delegate, stateDir, guard)
			bundle, stdin := sandboxBundle(t)

			var stderr strings.Builder
			s := &Shim{Args: []string{"containerd-shim-kata-v2", "-namespace", "k8s.io", "-id", "sb", "start"},
				Env: []string{"KATA_CONF_FILE=" + cfg}, Stdin: stdin, Stderr: &stderr,
				Inspector: kernelInspector{command: inspector},
				Exec:      func(string, []string, []string) error { t.Fatal("handed off"); return nil }}
			require.Equal(t, 1, s.Run(quiet()))
			require.Equal(t, ErrorPrefix+"guest kernel "+kernel+" cannot be checked: it is not in the inspection cache "+
				statedir.KernelCacheDir(stateDir)+" and the inspector "+inspector+" does not exist; install kata-submount-guard's kata-runtime, "+
				"from the same build as containerd-shim-kata-v2, as "+inspector+": failed precondition", stderr.String())
			_, err := os.Stat(statedir.PlanPath(stateDir, "sb"))
			require.ErrorIs(t, err, os.ErrNotExist, "no plan")
			ents, err := os.ReadDir(bundle)
			require.NoError(t, err)
			require.Len(t, ents, 1, "only the spec in the bundle")
		})
	}
}

// TestWarningOnlyForStartsThatHandOff: the warning event says a sandbox
// starts with a suspect kernel, so it goes out only for a start that hands
// off, never for one that then fails on its delegate or its state_dir.
func TestWarningOnlyForStartsThatHandOff(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	delegate := filepath.Join(dir, "delegate")
	writeFakeKataShim(t, delegate, "3.2.0")
	notADir := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))
	vulnerable := policy.InspectorFunc(func(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
		return &verdict.Report{Path: path, Version: "6.1.69", Verdict: verdict.Vulnerable, Evidence: verdict.EvidenceVersion}, nil
	})
	for _, tc := range []struct {
		name      string
		delegate  string
		stateDir  string
		wantEvent bool
	}{
		{"hands off: published", delegate, filepath.Join(dir, "state"), true},
		{"delegate missing: not published", filepath.Join(dir, "nope"), filepath.Join(dir, "state"), false},
		{"plan cannot be stored: not published", delegate, filepath.Join(notADir, "state"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, address := serveEvents(t, nil)
			cfg := writeConfig(t, t.TempDir(), kernel, tc.delegate, tc.stateDir, `on_vulnerable = "warn"`, `delegate_kind = "go-3"`)
			_, stdin := sandboxBundle(t)
			handedOff := false
			var stderr strings.Builder
			s := &Shim{Args: []string{"containerd-shim-kata-v2", "-namespace", "k8s.io", "-id", "sb", "start"},
				Env: []string{"KATA_CONF_FILE=" + cfg, ttrpcAddressEnv + "=" + address}, Stdin: stdin, Stderr: &stderr,
				Inspector: vulnerable,
				Exec: func(string, []string, []string) error {
					handedOff = true
					return os.ErrProcessDone // stands for "exec returned"
				}}
			require.Equal(t, 1, s.Run(quiet()))
			require.Equal(t, tc.wantEvent, handedOff, stderr.String())
			select {
			case req := <-f.got:
				require.True(t, tc.wantEvent, "event published for a start that failed: %v; stderr: %s", req, stderr.String())
				require.Equal(t, WarnTopic, req.GetEnvelope().GetTopic())
			default:
				require.False(t, tc.wantEvent, "no event for a start that handed off")
			}
		})
	}
}
