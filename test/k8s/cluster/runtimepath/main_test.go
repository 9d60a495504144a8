package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	const table = `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu]
  runtime_type = "io.containerd.kata-qemu.v2"
  runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"
`
	for _, tc := range []struct {
		name, binary, config, imported string
		want, err                      string
	}{
		{name: "the handler's runtime_path", binary: "containerd-shim-kata-qemu-v2", config: table, want: "/opt/kata/bin/containerd-shim-kata-v2"},
		{name: "a runtime without runtime_path", binary: "containerd-shim-runc-v2", config: table, err: `no runtime with runtime_type "io.containerd.runc.v2" and a runtime_path`},
		{name: "an unknown runtime", binary: "containerd-shim-kata-clh-v2", config: table, err: `no runtime with runtime_type "io.containerd.kata-clh.v2"`},
		{name: "not a shim name", binary: "runtimepath", config: table, err: "run as containerd-shim-<name>-v2, not runtimepath"},
		{
			name: "an import's CRI section replaces the main file's", binary: "containerd-shim-kata-qemu-v2", config: table,
			imported: "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_type = \"io.containerd.kata-qemu.v2\"\nruntime_path = \"/opt/guard/shim\"\n",
			want:     "/opt/guard/shim",
		},
		{
			name: "two handlers disagree", binary: "containerd-shim-kata-qemu-v2",
			config: table + "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.other]\nruntime_type = \"io.containerd.kata-qemu.v2\"\nruntime_path = \"/x\"\n",
			err:    "different runtime_path",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := tc.config
			if tc.imported != "" {
				imp := filepath.Join(dir, "imported.toml")
				require.NoError(t, os.WriteFile(imp, []byte(tc.imported), 0o644))
				cfg = "imports = [\"" + imp + "\"]\n" + cfg
			}
			path := filepath.Join(dir, "config.toml")
			require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
			got, err := resolve(tc.binary, path)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
