package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"install", "--json"}, {"status", "--wait"}, {"status", "--json", "x"}} {
		err := run(context.Background(), args, func(string) string { return "" }, &bytes.Buffer{})
		require.Error(t, err, "%q", args)
		assert.Contains(t, err.Error(), "usage:")
	}
}

func TestStatusExitsOneWhenAKataShimIsUnguarded(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, p), []byte(s), 0o644))
	}
	env := map[string]string{"HOST_ROOT": root, "ARTIFACTS_DIR": root}
	getenv := func(k string) string { return env[k] }

	write("/etc/containerd/config.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n")
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"status"}, getenv, &out))
	assert.Contains(t, out.String(), "no Kata runtime handler found")

	write("/etc/containerd/config.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu]\nruntime_path = \"/opt/kata/bin/containerd-shim-kata-v2\"\n")
	out.Reset()
	err := run(context.Background(), []string{"status"}, getenv, &out)
	assert.Equal(t, errUnguarded, err)
	assert.Contains(t, out.String(), "qemu")
	assert.Contains(t, out.String(), "kata-qemu")

	out.Reset()
	assert.Equal(t, errUnguarded, run(context.Background(), []string{"status", "--json"}, getenv, &out))
	assert.Contains(t, out.String(), `"Guarded": false`)
}
