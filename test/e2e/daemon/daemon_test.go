package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// TestDaemonSmoke boots a guest that mounts the share and runs the smoke
// scenario against our daemon and both references; every check must pass
// for each, and the host must see what the guest wrote.
func TestDaemonSmoke(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	testutil.RequiresRoot(t)
	for _, kind := range []string{ours, rust, cvfs} {
		t.Run(kind, func(t *testing.T) {
			dir := share(t)
			vol := filepath.Join(dir, "vol")
			require.NoError(t, os.Mkdir(vol, 0o755))
			require.NoError(t, unix.Mount("tmpfs", vol, "tmpfs", 0, "size=4m"))
			t.Cleanup(func() { _ = unix.Unmount(vol, unix.MNT_DETACH) })
			require.NoError(t, os.WriteFile(filepath.Join(vol, "in-volume"), []byte("volume file\n"), 0o644))

			d := startDaemon(t, kind, dir)
			lines := guestRun(t, d, "smoke", 3*time.Minute, nil)
			t.Logf("guest results against %s:\n%s", kind, strings.Join(lines, "\n"))
			checks := map[string]string{}
			for _, l := range lines {
				f := strings.SplitN(l, " ", 4)
				if f[0] == "KSG-CHECK" && len(f) >= 3 {
					checks[f[1]] = strings.Join(f[2:], " ")
				}
			}
			for _, name := range []string{"mount", "read_host_file", "write_file", "big_file", "readdir_500",
				"rename_link_symlink_unlink", "truncate_chmod_chown", "mmap_shared_write", "submount_own_st_dev", "dotdot_stays_in_guest"} {
				require.Equal(t, "ok", checks[name], "guest check %s against %s", name, kind)
			}
			b, err := os.ReadFile(filepath.Join(dir, "from-guest"))
			require.NoError(t, err)
			require.Equal(t, "written", string(b))
			var st unix.Stat_t
			require.NoError(t, unix.Stat(filepath.Join(dir, "from-guest"), &st))
			require.EqualValues(t, 1000, st.Uid)
			require.EqualValues(t, 0o600, st.Mode&0o777)
			big, err := os.Stat(filepath.Join(dir, "big"))
			require.NoError(t, err)
			require.EqualValues(t, 3<<20+12345, big.Size())

			select {
			case err := <-d.done:
				d.done <- err
				if kind == ours {
					require.NoError(t, err, "our daemon must exit 0 when the VM goes away")
					require.Contains(t, d.out.String(), "vhost-user frontend disconnected")
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not exit after the VM went away", kind)
			}
		})
	}
}
