package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// TestDaemonSmoke boots a guest that mounts the share and runs the smoke
// mode against our daemon and both references; every check must pass for
// each, and the host must see what the guest wrote.
func TestDaemonSmoke(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	env := harness.NewEnv(t)
	for _, d := range daemons {
		t.Run(string(d), func(t *testing.T) {
			dir := workDir(t)
			share, err := harness.NewShare(dir, "sb", "")
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, share.Close()) })
			require.NoError(t, os.WriteFile(filepath.Join(share.Dir, "hello"), []byte("hello from the host\n"), 0o644))
			vol := filepath.Join(share.Dir, "vol")
			require.NoError(t, share.MountTmpfs(vol, "4m"))
			require.NoError(t, os.WriteFile(filepath.Join(vol, "in-volume"), []byte("volume file\n"), 0o644))

			spec := daemonSpec(env, d, "", filepath.Join(dir, "state"))
			r := bootGuest(t, env, dir, share, d, spec, vmOptions{Mode: guest.ModeSmoke, Timeout: 3 * time.Minute})
			t.Logf("guest checks against %s: %v", d, r.Lines.Checks)
			requireChecksOK(t, d, r, "mount", "read_host_file", "write_file", "big_file", "readdir_500",
				"rename_link_symlink_unlink", "truncate_chmod_chown", "mmap_shared_write", "submount_own_st_dev", "dotdot_stays_in_guest")
			b, err := os.ReadFile(filepath.Join(share.Dir, "from-guest"))
			require.NoError(t, err)
			require.Equal(t, "written", string(b))
			var st unix.Stat_t
			require.NoError(t, unix.Stat(filepath.Join(share.Dir, "from-guest"), &st))
			require.EqualValues(t, 1000, st.Uid)
			require.EqualValues(t, 0o600, st.Mode&0o777)
			big, err := os.Stat(filepath.Join(share.Dir, "big"))
			require.NoError(t, err)
			require.EqualValues(t, 3<<20+12345, big.Size())

			require.True(t, r.Exited, "%s did not exit after the VM went away", d)
			if d == harness.DaemonOurs {
				require.NoError(t, r.ExitErr, "our daemon must exit 0 when the VM goes away")
				require.True(t, strings.Contains(r.daemonLog(), "vhost-user frontend disconnected"), "daemon log:\n%s", r.daemonLog())
			}
		})
	}
}
