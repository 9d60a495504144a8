package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks"
)

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
			require.NoError(t, os.WriteFile(delegate, []byte("#!/bin/sh\n"), 0o755))
			cfg := filepath.Join(dir, "configuration.toml")
			require.NoError(t, os.WriteFile(cfg, []byte(`[hypervisor.qemu]
kernel = "`+delegate+`"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/kata-virtiofsd"
[submount_guard]
delegate_shim = "`+delegate+`"
state_dir = "`+stateDir+`"
`), 0o644))
			for _, id := range []string{"sb", "other"} {
				require.NoError(t, hooks.WritePlan(stateDir, &hooks.Plan{SandboxID: id, Action: hooks.Allow, Protection: hooks.ProtectNone}))
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
			require.Equal(t, 1, s.Run(context.Background()))
			require.Equal(t, delegate, gotPath, stderr.String())
			require.Equal(t, args, gotArgs)
			require.Equal(t, env, gotEnv)

			entries, err := os.ReadDir(stateDir)
			require.NoError(t, err)
			var left []string
			for _, e := range entries {
				left = append(left, strings.TrimSuffix(e.Name(), ".json"))
			}
			require.Equal(t, tc.wantPlans, left)
		})
	}
}
