package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeFile writes content at dir/rel, creating parents, and returns the path.
func writeFile(t *testing.T, dir, rel, content string) string {
	t.Helper()
	p := filepath.Join(dir, rel)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// qemuConfig is a minimal valid configuration whose kernel is kernel.
func qemuConfig(kernel string) string {
	return `[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "` + kernel + `"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/virtiofsd"]
virtio_fs_extra_args = ["--thread-pool-size=1", "--announce-submounts"]
virtio_fs_cache = "auto"
enable_annotations = ["enable_iommu", "virtio_fs_extra_args", "kernel_params"]

[agent.kata]
enable_debug = false

[runtime]
enable_debug = true
`
}
