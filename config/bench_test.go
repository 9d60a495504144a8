package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func realisticConfig(t testing.TB) string {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux.container")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	data, err := os.ReadFile("testdata/configuration-qemu.toml")
	require.NoError(t, err)
	p := filepath.Join(dir, "configuration.toml")
	require.NoError(t, os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "@KERNEL@", kernel)), 0o644))
	return p
}

func TestRealisticConfig(t *testing.T) {
	p := realisticConfig(t)
	r, err := Resolve(context.Background(), Sources{ExplicitPath: p, Annotations: map[string]string{
		AnnotationVirtioFSArgs: `["--cache=never"]`, "io.kubernetes.cri.container-type": "sandbox",
	}})
	require.NoError(t, err)
	require.Equal(t, "qemu", r.HypervisorName)
	require.Equal(t, "/opt/kata/libexec/kata-virtiofsd", r.Hypervisor.VirtioFSDaemon)
	require.Equal(t, []string{"--thread-pool-size=1", "--announce-submounts", "--cache=never"}, r.Hypervisor.VirtioFSExtraArgs)
	require.Equal(t, defaultGuard(), r.Guard)
}

// BenchmarkResolve measures what the shim pays per sandbox to find and read
// Kata's configuration (a realistic qemu file, one annotation).
func BenchmarkResolve(b *testing.B) {
	p := realisticConfig(b)
	src := Sources{ExplicitPath: p, Annotations: map[string]string{AnnotationVirtioFSArgs: `["--cache=never"]`}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Resolve(context.Background(), src); err != nil {
			b.Fatal(err)
		}
	}
}
