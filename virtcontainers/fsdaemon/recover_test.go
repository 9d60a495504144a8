package fsdaemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// kataShare lays out a share as Kata does, <base>/sandboxes/<sandbox>/shared
// (so that kata-virtiofsd takes the sandbox ID from it), with a state dir
// beside it; it returns the share, the state dir, the sandbox's status file
// path and a socket path.
func kataShare(t *testing.T, sandbox string) (shared, state, statusPath, sock string) {
	t.Helper()
	base := t.TempDir()
	shared = filepath.Join(base, "sandboxes", sandbox, "shared")
	require.NoError(t, os.MkdirAll(shared, 0o755))
	state = filepath.Join(base, "state")
	return shared, state, statedir.StatusPath(state, sandbox), filepath.Join(t.TempDir(), "vhost.sock")
}

// TestServeRecover plays a guest kernel without Linux c4d361f66ac9 against
// Serve with protection recover, in every sandbox mode: the submount root's
// node ID is forgotten and then used; the daemon must serve it and count the
// recovery in <state_dir>/status/<sandbox-id>.json.
func TestServeRecover(t *testing.T) {
	for _, mode := range []fssandbox.Mode{fssandbox.ModeNone, fssandbox.ModeChroot, fssandbox.ModeNamespace} {
		t.Run(string(mode), func(t *testing.T) {
			testutil.RequiresRoot(t)
			const sandbox = "sb-recover"
			shared, state, statusPath, sock := kataShare(t, sandbox)
			vol := filepath.Join(shared, "vol")
			require.NoError(t, os.MkdirAll(vol, 0o755))
			require.NoError(t, unix.Mount("tmpfs", vol, "tmpfs", 0, "size=1m"))
			t.Cleanup(func() { _ = unix.Unmount(vol, unix.MNT_DETACH) })
			require.NoError(t, os.WriteFile(filepath.Join(vol, "marker"), []byte("volume data"), 0o644))
			args := []string{"--shared-dir=" + shared, "--socket-path=" + sock, "--sandbox=" + string(mode),
				"--cache=auto", "--announce-submounts", "--guard-protection=recover", "--guard-state-dir=" + state}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			daemonPid := os.Getpid()
			if mode == fssandbox.ModeNone {
				o, err := virtiofsd.Parse(args)
				require.NoError(t, err)
				require.Equal(t, sandbox, o.SandboxID)
				o.Protection = protection.Recover
				go func() { done <- Serve(ctx, o) }()
			} else {
				cmd := exec.CommandContext(ctx, sandboxd(t), args...)
				cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
				require.NoError(t, cmd.Start())
				daemonPid = cmd.Process.Pid
				go func() { done <- cmd.Wait() }()
			}

			s := connect(t, sock)
			c := s.clients[0]
			_, err := c.Init(fst.GuestInitFlags)
			require.NoError(t, err)
			st, err := ReadStatus(statusPath)
			require.NoError(t, err, "status written when serving starts")
			require.True(t, st.Running)
			require.Equal(t, daemonPid, st.PID)
			require.Equal(t, "recover", st.Protection)
			require.Zero(t, st.Recoveries)

			v, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "vol")
			require.NoError(t, err)
			require.Zero(t, errno)
			require.NotZero(t, v.Attr.Flags&fuse.ATTR_SUBMOUNT)
			// The parent's inode is evicted: FORGET on the hiprio queue.
			fin := fuse.ForgetIn{Nlookup: 1}
			_, err = (&fst.Client{Q: s.hiprio}).Call(fst.OpForget, v.NodeId, fst.InBody(&fin), nil, -1)
			require.NoError(t, err)
			// The submount root goes on using the node ID.
			var gin fuse.GetAttrIn
			r, err := c.Call(fst.OpGetattr, v.NodeId, fst.InBody(&gin), nil, int(unsafe.Sizeof(fuse.AttrOut{})))
			require.NoError(t, err)
			require.Zero(t, r.Errno, "getattr on the forgotten submount root")
			_, got := lookupAndRead(t, c, v.NodeId, "marker")
			require.Equal(t, "volume data", got)

			require.Eventually(t, func() bool {
				st, err := ReadStatus(statusPath)
				return err == nil && st.Recoveries == 1 && st.Running
			}, 10*time.Second, 20*time.Millisecond, "status file counts the recovery while serving")

			s.hangUp(t, done)
			st, err = ReadStatus(statusPath)
			require.NoError(t, err)
			require.False(t, st.Running, "final status")
			require.EqualValues(t, 1, st.Recoveries)
			require.EqualValues(t, 1, st.Forgotten)
			require.Equal(t, passthroughfs.DefaultMaxHeld, st.MaxHeld)
		})
	}
}
