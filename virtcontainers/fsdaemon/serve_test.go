package fsdaemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sandboxdBin != "" {
		os.RemoveAll(filepath.Dir(sandboxdBin))
	}
	os.Exit(code)
}

// session is a guest's side of the daemon's virtio-fs device.
type session struct {
	f       *vut.Frontend
	hiprio  *vut.Queue
	clients []*fst.Client
}

// connect dials the daemon's socket and sets up a session like QEMU.
func connect(t *testing.T, sock string) *session {
	t.Helper()
	d, err := vut.DialFS(sock, 10*time.Second)
	require.NoError(t, err)
	return &session{f: d.Frontend, hiprio: d.Hiprio, clients: []*fst.Client{{Q: d.Requests}}}
}

// hangUp closes the session as a VMM that goes away does, and requires the
// daemon (its result on done) to end cleanly within 20 s.
func (s *session) hangUp(t *testing.T, done <-chan error, msgAndArgs ...any) {
	t.Helper()
	s.hiprio.Close()
	for _, c := range s.clients {
		c.Q.Close()
	}
	s.f.Close()
	select {
	case err := <-done:
		require.NoError(t, err, msgAndArgs...)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running after the frontend hung up")
	}
}

// lookupAndRead looks name up under parent, opens it read-only and reads up
// to 100 bytes, requiring each step to succeed.
func lookupAndRead(t *testing.T, c *fst.Client, parent uint64, name string) (*fuse.EntryOut, string) {
	t.Helper()
	e, errno, err := c.Lookup(parent, name)
	require.NoError(t, err)
	require.Zero(t, errno)
	fh, errno, err := c.Open(e.NodeId, syscall.O_RDONLY)
	require.NoError(t, err)
	require.Zero(t, errno)
	got, err := c.Read(e.NodeId, fh, 0, 100)
	require.NoError(t, err)
	return e, string(got)
}

// childOf returns the pid of our child process running the sandbox.
func childOf(t *testing.T, parent int) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		if c := testutil.Children(parent); len(c) > 0 {
			pid = c[0]
			return true
		}
		return false
	}, 10*time.Second, 10*time.Millisecond)
	return pid
}

func procStatus(t *testing.T, pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestServeSandboxModes(t *testing.T) {
	for _, mode := range []fssandbox.Mode{fssandbox.ModeNone, fssandbox.ModeChroot, fssandbox.ModeNamespace} {
		t.Run(string(mode), func(t *testing.T) {
			if mode != fssandbox.ModeNone {
				testutil.RequiresRoot(t)
			}
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "greeting"), []byte("hello from the host"), 0o644))
			require.NoError(t, os.Symlink("/etc", filepath.Join(dir, "abs")))
			// A guest's plant: the confined daemon must not take it for its
			// own /proc/self/status.
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "proc", "self"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "proc", "self", "status"), []byte("CapEff:\tffffffffffffffff\n"), 0o644))
			sock := filepath.Join(t.TempDir(), "vhost.sock")
			o := &virtiofsd.Options{SharedDir: dir, FD: -1, SocketPath: sock, Sandbox: virtiofsd.SandboxMode(mode),
				Cache: virtiofsd.CacheAuto, ThreadPoolSize: 2, AnnounceSubmounts: true, LogLevel: "info"}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			daemonPid := os.Getpid()
			var daemonLog testutil.SyncBuffer
			if mode == fssandbox.ModeNone {
				go func() { done <- Serve(ctx, o) }()
			} else {
				// The sandbox needs a binary without cgo (the test binary
				// has it under -race): run the static helper.
				cmd := exec.CommandContext(ctx, sandboxd(t), "--shared-dir="+dir, "--socket-path="+sock,
					"--sandbox="+string(mode), "--thread-pool-size=2", "--cache=auto", "--log-level=debug")
				cmd.Stdout, cmd.Stderr = os.Stdout, io.MultiWriter(os.Stderr, &daemonLog)
				require.NoError(t, cmd.Start())
				daemonPid = cmd.Process.Pid
				go func() { done <- cmd.Wait() }()
			}

			s := connect(t, sock)
			c := s.clients[0]
			_, err := c.Init(fst.GuestInitFlags)
			require.NoError(t, err)
			_, got := lookupAndRead(t, c, fuse.FUSE_ROOT_ID, "greeting")
			require.Equal(t, "hello from the host", got)
			ne, fh2, err := c.Create(fuse.FUSE_ROOT_ID, "from-guest", 0o600)
			require.NoError(t, err)
			_, err = c.Write(ne.NodeId, fh2, 0, []byte("guest data"))
			require.NoError(t, err)
			b, err := os.ReadFile(filepath.Join(dir, "from-guest"))
			require.NoError(t, err)
			require.Equal(t, "guest data", string(b))

			// Escapes: ".." at the root and an absolute symlink must not
			// reach the host's /etc.
			if up, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, ".."); err == nil && errno == 0 {
				_, errno, err = c.Lookup(up.NodeId, "etc")
				require.NoError(t, err)
				require.NotZero(t, errno, "\"..\" at the share's root reached the host's /etc")
			}
			if abs, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "abs"); err == nil && errno == 0 {
				_, errno, err = c.Lookup(abs.NodeId, "passwd")
				require.NoError(t, err)
				require.NotZero(t, errno, "a symlink to /etc was followed on the host")
			}

			if mode != fssandbox.ModeNone {
				pid := childOf(t, daemonPid)
				capEff, err := strconv.ParseUint(procStatus(t, pid, "CapEff"), 16, 64)
				require.NoError(t, err)
				require.Equal(t, fssandbox.KeptMask(), capEff, "confined daemon holds other capabilities")
				capBnd, err := strconv.ParseUint(procStatus(t, pid, "CapBnd"), 16, 64)
				require.NoError(t, err)
				require.Equal(t, fssandbox.KeptMask(), capBnd)
				for _, ns := range []string{"mnt", "pid", "net"} {
					ours, err := os.Readlink("/proc/self/ns/" + ns)
					require.NoError(t, err)
					theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
					require.NoError(t, err)
					if mode == fssandbox.ModeNamespace {
						require.NotEqual(t, ours, theirs, "daemon shares our %s namespace", ns)
					} else {
						require.Equal(t, ours, theirs)
					}
				}
				// It runs with sysmon kept from sleeping deeply (runtime.go).
				environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
				require.NoError(t, err)
				require.Contains(t, strings.Split(string(environ), "\x00"), "GODEBUG=schedtrace=2147483647")
				// The daemon's root is the shared directory: what it sees
				// as /greeting is the host's file.
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/greeting", pid))
				require.NoError(t, err)
				require.Equal(t, "hello from the host", string(b))
			}

			// The frontend going away ends the daemon cleanly.
			s.hangUp(t, done)
			_, err = os.Stat(sock)
			require.True(t, os.IsNotExist(err), "socket left behind")
			if mode != fssandbox.ModeNone {
				// Its log reports its own capabilities and the filter
				// virtiofsd would install by default.
				require.Contains(t, daemonLog.String(), fmt.Sprintf("capabilities=%016x", fssandbox.KeptMask()))
				require.Contains(t, daemonLog.String(), "seccomp=kill")
			}
		})
	}
}

// sandboxd builds testdata/sandboxd with CGO_ENABLED=0 once per test run.
func sandboxd(t *testing.T) string {
	t.Helper()
	sandboxdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sandboxd")
		if err != nil {
			sandboxdErr = err
			return
		}
		sandboxdBin = filepath.Join(dir, "sandboxd")
		cmd := exec.Command("go", "build", "-o", sandboxdBin, "./testdata/sandboxd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			sandboxdErr = fmt.Errorf("build sandboxd: %v: %s", err, out)
		}
	})
	require.NoError(t, sandboxdErr)
	return sandboxdBin
}

var (
	sandboxdOnce sync.Once
	sandboxdBin  string
	sandboxdErr  error
)

func TestServeInheritedFD(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(t.TempDir(), "kata.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	require.NoError(t, err)
	l.Close()
	defer f.Close()
	o := &virtiofsd.Options{SharedDir: dir, FD: int(f.Fd()), Sandbox: virtiofsd.SandboxNone, Cache: virtiofsd.CacheAuto}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), o) }()
	s := connect(t, sock)
	_, err = s.clients[0].Init(fst.GuestInitFlags)
	require.NoError(t, err)
	s.f.Close()
	require.NoError(t, <-done)
}

func TestServeRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	notSock := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(notSock, nil, 0o644))
	for _, tc := range []struct {
		name string
		o    virtiofsd.Options
		want string
	}{
		{"no_shared_dir", virtiofsd.Options{FD: -1, SocketPath: filepath.Join(dir, "s")}, "no shared directory"},
		{"shared_dir_missing", virtiofsd.Options{SharedDir: filepath.Join(dir, "nope"), FD: -1, SocketPath: filepath.Join(dir, "s")}, "not a directory"},
		{"no_socket", virtiofsd.Options{SharedDir: dir, FD: -1, Sandbox: virtiofsd.SandboxNone}, "neither --fd nor --socket-path"},
		{"socket_path_is_a_file", virtiofsd.Options{SharedDir: dir, FD: -1, SocketPath: notSock, Sandbox: virtiofsd.SandboxNone}, "not a socket"},
		{"fd_not_a_socket", virtiofsd.Options{SharedDir: dir, FD: int(os.Stdin.Fd()), Sandbox: virtiofsd.SandboxNone}, "not a listening socket"},
		{"bad_sandbox", virtiofsd.Options{SharedDir: dir, FD: -1, SocketPath: filepath.Join(dir, "s"), Sandbox: "jail"}, "sandbox mode \"jail\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Serve(context.Background(), &tc.o)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := os.Stat(notSock)
	require.NoError(t, err, "Serve removed a file that is not its socket")

	t.Run("sandbox_in_cgo_binary", func(t *testing.T) {
		if fssandbox.Supported(fssandbox.ModeNamespace) == nil {
			t.Skip("test binary built without cgo")
		}
		sock := filepath.Join(dir, "cgo.sock")
		err := Serve(context.Background(), &virtiofsd.Options{SharedDir: dir, FD: -1, SocketPath: sock, Sandbox: virtiofsd.SandboxNamespace})
		require.ErrorContains(t, err, "build it with CGO_ENABLED=0")
		_, err = os.Stat(sock)
		require.True(t, os.IsNotExist(err), "refused daemon left its socket")
	})
}
