package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// TestHandOffToRealKata: containerd → our shim → Kata's real shim, built by
// test/setup/70-kata.sh from the 3.2.0 and 4.1.0 archives. Kata stops at
// create with its vsock error here (this machine has no vhost-vsock): that
// error names the file Kata loaded, so it proves Kata accepted the file our
// plan was made from, [submount_guard] table included. The guard identifies
// each Kata from its own --version. The bypass found with Kata 4.1.0 — a
// pod's io.katacontainers.config_path annotation naming a fixed kernel's file
// while Kata 4 loads the runtime option's vulnerable one — is refused on
// 4.1.0 and, as Kata 3 honours the annotation, consistent on 3.2.0.
func TestHandOffToRealKata(t *testing.T) {
	kernels := requireKernels(t)
	for _, tag := range []string{"3.2.0", "4.1.0"} {
		t.Run(tag, func(t *testing.T) {
			kataShim := testutil.RequiresCacheFile(t, filepath.Join("kata", tag, "bin", "containerd-shim-kata-v2"))
			dir, err := os.MkdirTemp("", "ksg-kata-")
			require.NoError(t, err)
			t.Cleanup(func() { os.RemoveAll(dir) })
			stateDir := filepath.Join(dir, "state")
			write := func(name, kernel string) string {
				p := filepath.Join(dir, name, "configuration.toml")
				require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
				require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(`[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = %q
shared_fs = "virtio-fs"
virtio_fs_daemon = "/usr/lib/qemu/virtiofsd"

[agent.kata]

[runtime]

[submount_guard]
on_vulnerable = "refuse"
on_unknown = "refuse"
delegate_shim = %q
state_dir = %q
`, kernel, kataShim, stateDir)), 0o644))
				return p
			}
			vuln, fixed := write("vuln", kernels.vulnerable), write("fixed", kernels.fixed)

			var syslog *testutil.Syslog
			c := startContainerd(t, containerdOptions{wrap: func(cmd *exec.Cmd) { syslog = testutil.PrivateSyslog(t, cmd) }})
			vsock := func(file string) string {
				return file + ": host system doesn't support vsock: stat /dev/vhost-vsock: no such file or directory"
			}

			t.Run("Kata loads the file our plan was made from", func(t *testing.T) {
				id := "fixed-" + strings.ReplaceAll(tag, ".", "-")
				_, stderr, err := c.ctr(ctrNamespace, "run", "--runtime", kataRuntime, "--runtime-config-path", fixed, testImage, id, "/bin/echo", "hello")
				require.Error(t, err)
				require.Contains(t, stderr, vsock(fixed), "Kata %s's create error", tag)
				require.Contains(t, syslog.String(), "source=containerd-kata-shim-v2", "Kata's shim logs to the test's /dev/log")
				// The failed create is deleted through our shim and Kata's:
				// the plan goes.
				eventually(t, func() bool { return len(plans(t, stateDir)) == 0 }, "plan of %s left after delete", id)
				_, stderr, err = c.ctr(ctrNamespace, "containers", "delete", id)
				require.NoError(t, err, stderr)
				cache, err := os.ReadDir(statedir.DelegateCacheDir(stateDir))
				require.NoError(t, err)
				require.Len(t, cache, 1, "Kata %s identified once, from its --version", tag)
			})

			t.Run("config_path annotation against the runtime option", func(t *testing.T) {
				id := "bypass-" + strings.ReplaceAll(tag, ".", "-")
				_, stderr, err := c.ctr(ctrNamespace, "run", "--runtime", kataRuntime, "--runtime-config-path", vuln,
					"--annotation", config.AnnotationConfigPath+"="+fixed, testImage, id, "/bin/echo", "hello")
				require.Error(t, err)
				if tag == "4.1.0" {
					// Kata 4 would load vuln: we judge vuln and refuse.
					require.Equal(t, ctrStartFailure(vulnerableRefusal(kernels.vulnerable, vuln)), stderr)
					require.NotContains(t, plans(t, stateDir), id)
				} else {
					// Kata 3 loads the annotation's file, and so do we.
					require.Contains(t, stderr, vsock(fixed), "Kata %s's create error", tag)
					eventually(t, func() bool { return len(plans(t, stateDir)) == 0 }, "plan of %s left after delete", id)
				}
				_, _, _ = c.ctr(ctrNamespace, "containers", "delete", id)
			})
		})
	}
}
