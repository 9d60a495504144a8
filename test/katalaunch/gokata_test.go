package katalaunch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// kataGo returns the tag's runtime as test/setup/70-kata.sh built it.
func kataGo(t *testing.T, tag string) KataGo {
	t.Helper()
	k := KataGo{Tag: tag, Dir: filepath.Join(testutil.CacheDir(), "kata", tag)}
	_, err := os.Stat(filepath.Join(k.Dir, "ARCHIVE_SHA256"))
	testutil.Require(t, err == nil, "Kata "+tag+" missing under "+k.Dir+" (test/setup/70-kata.sh builds it)")
	return k
}

// launcher builds (or finds) the tag's launcher binary.
func launcher(t *testing.T, k KataGo) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := k.BuildLauncher(ctx, testutil.RepoRoot(t))
	require.NoError(t, err)
	return bin
}

// goShare lays out a share as Kata's Go runtime does and returns the
// shared path and the VM store standing for /run/vc/vm.
func goShare(t *testing.T, id string) (shared, vmStore, stateDir string) {
	root, err := os.MkdirTemp("", "ksg-go-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	shared = filepath.Join(root, "sandboxes", id, "shared")
	require.NoError(t, os.MkdirAll(shared, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(shared, "hello"), []byte("hi\n"), 0o644))
	return shared, filepath.Join(root, "vm"), filepath.Join(root, "state")
}

// TestKataGoStartsKataVirtiofsd starts kata-virtiofsd through Kata's own Go
// launch code of each tag (qemu.createVirtiofsDaemon, virtiofsd.Start with
// the socket as fd 3, virtiofsd.Stop), with the tag's default virtio-fs
// configuration plus our --guard-* options, in each mode; a vhost-user
// front-end must set up the device on the socket Kata made, in the process
// Kata started, and Kata's Stop must end it and remove the socket.
//
// It builds each tag's virtcontainers test package once (minutes when cold;
// the binary is kept in the cache), hence KSG_INTEGRATION=1 (make test).
func TestKataGoStartsKataVirtiofsd(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_INTEGRATION")
	testutil.RequiresRoot(t)
	kv := testutil.BuildCommand(t, "kata-virtiofsd")
	up := upstreams(t)
	modes := []struct {
		name          string
		guard         []string
		selinux       bool // disable_guest_selinux = false (3.2+)
		want, notWant []string
	}{
		{name: "ours recover", guard: []string{"--guard-protection=recover"}, want: []string{kv}},
		{name: "rust none", guard: []string{"--guard-protection=none", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=3"}, notWant: []string{"--no-announce-submounts"}},
		{name: "rust no-submounts", guard: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=3"}, notWant: []string{"announce_submounts", "--announce-submounts"}},
		{name: "rust no-submounts, guest SELinux", selinux: true, guard: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["rust"]},
			want: []string{"--fd=3", "--xattr --no-announce-submounts"}},
		{name: "c none", guard: []string{"--guard-protection=none", "--guard-upstream=" + up["c"]},
			want: []string{cDaemonPath, "--fd=3", "-o announce_submounts"}},
		{name: "c no-submounts", guard: []string{"--guard-protection=no-submounts", "--guard-upstream=" + up["c"]},
			want: []string{cDaemonPath, "--fd=3"}, notWant: []string{"announce_submounts"}},
	}
	for _, tag := range GoTags {
		t.Run(tag, func(t *testing.T) {
			k := kataGo(t, tag)
			bin := launcher(t, k)
			def, err := k.Defaults()
			require.NoError(t, err)
			for _, m := range modes {
				t.Run(m.name, func(t *testing.T) {
					if m.selinux && def.DisableGuestSELinux == nil {
						t.Skipf("Kata %s has no disable_guest_selinux", tag)
					}
					id := "go-" + strings.ReplaceAll(tag, ".", "")
					shared, vmStore, stateDir := goShare(t, id)
					d, err := StartGo(context.Background(), bin, GoLaunch{
						Daemon: kv, SandboxID: id, SharedPath: shared, VMStorePath: vmStore, Cache: def.Cache,
						ExtraArgs:           append(append([]string{}, def.ExtraArgs...), append(m.guard, "--guard-state-dir="+stateDir)...),
						DisableGuestSELinux: !m.selinux,
					}, time.Minute)
					require.NoError(t, err)
					stopped := false
					t.Cleanup(func() {
						if !stopped {
							d.Stop()
						}
					})
					require.Equal(t, filepath.Join(vmStore, id, "vhost-fs.sock"), d.Socket)

					dev, err := vut.DialFS(d.Socket, 10*time.Second)
					require.NoError(t, err, "launcher output:\n%s", d.Output())
					// Connected until Kata stops the daemon: both upstream
					// daemons exit by themselves when the front-end hangs
					// up, which would race with Kata's Stop.
					defer dev.Close()
					argv := cmdline(t, d.Pid)
					if tag == "3.0.2" {
						// Kata's legacy argv reached the daemon (ours, or
						// the Rust one given the same tokens).
						if !strings.HasPrefix(m.name, "c ") {
							require.Contains(t, argv, "-o no_posix_lock -o source="+shared+" --fd=3 -f --thread-pool-size=1")
						}
					} else if !strings.HasPrefix(m.name, "c ") {
						require.Contains(t, argv, "--cache=auto --shared-dir="+shared+" --fd=3 --thread-pool-size=1")
					}
					for _, w := range m.want {
						require.Contains(t, argv, w)
					}
					for _, w := range m.notWant {
						require.NotContains(t, argv, w)
					}
					if !strings.HasPrefix(m.name, "ours") {
						require.NotContains(t, argv, "--guard-", "our options never reach an upstream")
					}

					out, err := d.Stop()
					stopped = true
					require.NoError(t, err, "launcher output:\n%s", out)
					require.Eventually(t, func() bool { return gone(d.Pid) }, 10*time.Second, 10*time.Millisecond, "Kata's Stop killed the daemon")
					require.NotContains(t, out, "KSG-QUIT", "%s quit before Kata stopped it", m.name)
					_, err = os.Lstat(d.Socket)
					require.True(t, errors.Is(err, os.ErrNotExist), "Kata's Stop removed the socket: %v", err)
				})
			}
		})
	}
}

// gone reports whether pid has ended (a zombie not yet reaped counts).
func gone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
