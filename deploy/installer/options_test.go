package installer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	o, err := OptionsFromEnv(env(map[string]string{"NODE_NAME": "n1", "ARTIFACTS_DIR": "/a"}))
	require.NoError(t, err)
	assert.Equal(t, Options{
		NodeName: "n1", HostRoot: "/host", KataPrefix: "/opt/kata", GuardPrefix: "/opt/kata-submount-guard",
		ContainerdConf: "/etc/containerd/config.toml", RestartCommand: DefaultRestartCommand,
		NFDFeaturesDir: "/etc/kubernetes/node-feature-discovery/features.d", ArtifactsDir: "/a",
		Shims: []string{}, Interval: 10 * time.Second,
	}, o)

	o, err = OptionsFromEnv(env(map[string]string{"SHIMS": "qemu, qemu-runtime-rs clh", "RECONCILE_INTERVAL": "2s", "ARTIFACTS_DIR": "/a"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"qemu", "qemu-runtime-rs", "clh"}, o.Shims)
	assert.Equal(t, 2*time.Second, o.Interval)

	for _, tc := range []struct{ key, val, want string }{
		{"KATA_PREFIX", "opt/kata", `KATA_PREFIX "opt/kata": want an absolute path on the host`},
		{"HOST_ROOT", "host", `HOST_ROOT "host"`},
		{"RECONCILE_INTERVAL", "often", `RECONCILE_INTERVAL "often"`},
		{"RECONCILE_INTERVAL", "-1s", `RECONCILE_INTERVAL "-1s"`},
		{"SHIMS", "qemu bad/name", `SHIMS: "bad/name"`},
	} {
		_, err := OptionsFromEnv(env(map[string]string{tc.key: tc.val, "ARTIFACTS_DIR": "/a"}))
		require.Error(t, err, tc.key)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestRestartCommandRunsInTheHostsRoot(t *testing.T) {
	out := filepath.Join(t.TempDir(), "restarted")
	o := Options{HostRoot: "/", RestartCommand: "echo restarted > " + out}
	require.NoError(t, o.runRestart(context.Background()))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, "restarted\n", string(b))

	o.RestartCommand = "echo no such unit >&2; exit 5"
	err = o.runRestart(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no such unit")
	assert.Contains(t, err.Error(), "CONTAINERD_RESTART_COMMAND")
}

func TestHostResolveStaysInTheHostsRoot(t *testing.T) {
	root := t.TempDir()
	h := hostFS{root: root}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "opt/kata/share"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "opt/kata/share/vmlinux-6.18"), nil, 0o644))
	require.NoError(t, os.Symlink("/opt/kata/share/vmlinux-6.18", filepath.Join(root, "opt/kata/share/abs.container")))
	require.NoError(t, os.Symlink("vmlinux-6.18", filepath.Join(root, "opt/kata/share/rel.container")))
	require.NoError(t, os.Symlink("/opt/kata", filepath.Join(root, "kata")))

	for in, want := range map[string]string{
		"/opt/kata/share/abs.container": "/opt/kata/share/vmlinux-6.18",
		"/opt/kata/share/rel.container": "/opt/kata/share/vmlinux-6.18",
		"/kata/share/abs.container":     "/opt/kata/share/vmlinux-6.18",
	} {
		got, err := h.resolve(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	_, err := h.resolve("/opt/kata/share/missing")
	assert.Error(t, err)
}
