package installer

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEditTOMLChangesOneValueOnly(t *testing.T) {
	path := runtimeKey("io.containerd.grpc.v1.cri", "kata-qemu", "runtime_path")
	for _, tc := range []struct{ name, doc, want string }{
		{
			name: "table header, comment after the value",
			doc:  "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path = \"/a\" # kata-deploy\nx = 1\n",
			want: "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path = \"/ours\" # kata-deploy\nx = 1\n",
		},
		{
			name: "dotted key under a parent table, literal string",
			doc:  "[plugins.'io.containerd.grpc.v1.cri'.containerd]\n  runtimes.kata-qemu.runtime_path = '/a'\n",
			want: "[plugins.'io.containerd.grpc.v1.cri'.containerd]\n  runtimes.kata-qemu.runtime_path = \"/ours\"\n",
		},
		{
			name: "same key in another handler and in strings that look like headers",
			doc: "s = \"\"\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path = \"/x\"\n\"\"\"\n" +
				"a = [\n  \"]\", # ]\n  '[',\n]\n" +
				"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-clh]\nruntime_path = \"/a\"\n" +
				"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path=\"/a\"\n",
			want: "s = \"\"\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path = \"/x\"\n\"\"\"\n" +
				"a = [\n  \"]\", # ]\n  '[',\n]\n" +
				"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-clh]\nruntime_path = \"/a\"\n" +
				"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path=\"/ours\"\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := editTOML("config.toml", []byte(tc.doc), path, tomlString("/ours"))
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
		})
	}
}

func TestEditTOMLRefusesWhatItCannotLocate(t *testing.T) {
	path := runtimeKey("cri", "kata-qemu", "runtime_path")
	for _, tc := range []struct{ name, doc, want string }{
		{"inline table", "plugins.cri.containerd.runtimes.kata-qemu = { runtime_path = \"/a\" }\n", "no plain `key = value` line"},
		{"absent", "[plugins.cri]\n", "no plain `key = value` line"},
		{"not TOML", "[plugins\n", "config.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := editTOML("config.toml", []byte(tc.doc), path, tomlString("/ours"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			if tc.name != "not TOML" {
				assert.True(t, errors.Is(err, errdefs.ErrNotFound))
			}
		})
	}
}

func TestTOMLString(t *testing.T) {
	assert.Equal(t, `"/opt/a \"b\" \\ \u0009"`, tomlString("/opt/a \"b\" \\ \t"))
	assert.Equal(t, `["a", "b"]`, tomlStrings([]string{"a", "b"}))
}
