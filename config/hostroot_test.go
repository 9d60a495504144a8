package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// hostTree lays out a host's files under a directory standing for its /,
// with the links absolute and relative that only resolve as host paths.
func hostTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, root, "opt/kata/share/vmlinuz-6.1.38", "x")
	writeFile(t, root, "opt/guard/bin/kata-virtiofsd", "x")
	link := func(target, at string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, at)), 0o755))
		require.NoError(t, os.Symlink(target, filepath.Join(root, at)))
	}
	// Absolute targets are host paths: followed from this process's / they
	// would lead nowhere (or to this machine's own files).
	link("/opt/kata/share/vmlinuz-6.1.38", "opt/kata/share/vmlinuz.container")
	link("../../opt/guard/bin/kata-virtiofsd", "usr/libexec/virtiofsd")
	link("/opt/kata/share/defaults/qemu", "etc/kata/qemu")
	link("loop-b", "etc/loop-a")
	link("loop-a", "etc/loop-b")
	writeFile(t, root, "opt/kata/share/defaults/qemu/configuration-qemu.toml", `[hypervisor.qemu]
kernel = "/opt/kata/share/vmlinuz.container"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/usr/libexec/virtiofsd"

[runtime]
hypervisor_name = "qemu"
`)
	writeFile(t, root, "opt/kata/share/defaults/qemu/config.d/90-guard.toml", "[submount_guard]\non_vulnerable = \"refuse\"\n")
	return root
}

func TestResolveUnderHostRoot(t *testing.T) {
	root := hostTree(t)
	for _, kind := range []DelegateKind{DelegateGo4, DelegateRuntimeRS} {
		t.Run(string(kind), func(t *testing.T) {
			src := Sources{Root: root, Delegate: kind, RuntimeOptions: RuntimeOptions{ConfigPath: "/etc/kata/qemu/configuration-qemu.toml"}}
			r, err := Resolve(context.Background(), src)
			require.NoError(t, err)
			require.Equal(t, "/opt/kata/share/defaults/qemu/configuration-qemu.toml", r.Path, "a host path, links followed inside the root")
			require.Equal(t, []string{"/opt/kata/share/defaults/qemu/config.d/90-guard.toml"}, r.File.DropIns)
			require.Equal(t, PolicyRefuse, r.Guard.OnVulnerable, "the drop-in beside the file is merged")
			require.Equal(t, "/opt/kata/share/vmlinuz-6.1.38", r.Hypervisor.Kernel)
			require.Equal(t, root, r.Root)
			if kind == DelegateRuntimeRS {
				// runtime-rs runs the daemon's canonical path.
				require.Equal(t, "/opt/guard/bin/kata-virtiofsd", r.Hypervisor.VirtioFSDaemon)
			} else {
				require.Equal(t, "/usr/libexec/virtiofsd", r.Hypervisor.VirtioFSDaemon)
			}
			got, err := r.EvalSymlinks("/usr/libexec/virtiofsd")
			require.NoError(t, err)
			require.Equal(t, "/opt/guard/bin/kata-virtiofsd", got)
		})
	}
}

func TestResolveInErrors(t *testing.T) {
	root := hostTree(t)
	for _, tc := range []struct {
		name, path string
		want       error
		msg        string
	}{
		{"missing", "/opt/kata/share/vmlinuz-6.2", errdefs.ErrNotFound, "file /opt/kata/share/vmlinuz-6.2 does not exist on the host (under " + root + ")"},
		{"relative", "opt/kata/share/vmlinuz-6.1.38", errdefs.ErrInvalidArgument, "a host path must be absolute"},
		{"loop", "/etc/loop-a", nil, "too many levels of symbolic links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolveIn(root, tc.path)
			require.ErrorContains(t, err, tc.msg)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
	got, err := resolveIn(root, "/usr/libexec/../libexec/./virtiofsd")
	require.NoError(t, err)
	require.Equal(t, "/opt/guard/bin/kata-virtiofsd", got)
}

func TestResolveUnderHostRootRefusesAnnotations(t *testing.T) {
	root := hostTree(t)
	_, err := Resolve(context.Background(), Sources{Root: root, Delegate: DelegateGo4,
		RuntimeOptions: RuntimeOptions{ConfigPath: "/etc/kata/qemu/configuration-qemu.toml"},
		Annotations:    map[string]string{AnnotationKernelParams: "quiet"}})
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "pod annotations are not supported")
}
