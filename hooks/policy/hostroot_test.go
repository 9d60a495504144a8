package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// TestDecideFollowsDaemonLinkUnderHostRoot: a configuration resolved from
// outside the host's mount namespace (config.Sources.Root, the kata-deploy
// companion) names a virtio_fs_daemon that is a link to kata-virtiofsd by
// an absolute host path. The link is followed under the root, as the host
// follows it; followed from this process's / it would lead elsewhere and the
// protection would be judged unavailable.
func TestDecideFollowsDaemonLinkUnderHostRoot(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	write("opt/kata/vmlinuz", "x")
	write("opt/guard/bin/"+ourVirtiofsd, "x")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/libexec/ksg-test"), 0o755))
	require.NoError(t, os.Symlink("/opt/guard/bin/"+ourVirtiofsd, filepath.Join(root, "usr/libexec/ksg-test/virtiofsd")))
	write("etc/kata/configuration.toml", `[hypervisor.qemu]
kernel = "/opt/kata/vmlinuz"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/usr/libexec/ksg-test/virtiofsd"

[submount_guard]
virtiofs_protection = "recover"
`)
	r, err := config.Resolve(context.Background(), config.Sources{Root: root, Delegate: config.DelegateGo4,
		RuntimeOptions: config.RuntimeOptions{ConfigPath: "/etc/kata/configuration.toml"}})
	require.NoError(t, err)
	calls := 0
	p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", Inspector: canned(verdict.Vulnerable, &calls)})
	require.NoError(t, err)
	require.Equal(t, plan.Warn, p.Action)
	require.False(t, p.Unprotected, p.Reason)
	require.Equal(t, protection.Recover, p.Protection)
}
