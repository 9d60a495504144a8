package virtiofsd

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

func listeningFile(t *testing.T) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vhost.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	require.NoError(t, err)
	require.NoError(t, l.Close())
	t.Cleanup(func() { f.Close() })
	return path, f
}

func TestCheckListener(t *testing.T) {
	_, listening := listeningFile(t)
	fd := int(listening.Fd())
	// os.File sets close-on-exec; CheckListener must clear it.
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.NotZero(t, flags&unix.FD_CLOEXEC)
	require.NoError(t, CheckListener(fd))
	flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.Zero(t, flags&unix.FD_CLOEXEC)

	regular, err := os.Open(os.Args[0])
	require.NoError(t, err)
	t.Cleanup(func() { regular.Close() })

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(pair[0]); unix.Close(pair[1]) })

	closed, err := unix.Dup(fd)
	require.NoError(t, err)
	require.NoError(t, unix.Close(closed))

	for _, tc := range []struct {
		name string
		fd   int
		want string
	}{
		{"regular file", int(regular.Fd()), "not a socket"},
		{"connected socket", pair[0], "the socket is not listening"},
		{"closed", closed, "no such open file descriptor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckListener(tc.fd)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestCDaemonTakesEscapedOptions starts QEMU's C virtiofsd with a translated
// command line whose shared dir holds a comma, which its -o parser would
// split without the escaping.
func TestCDaemonTakesEscapedOptions(t *testing.T) {
	testutil.RequiresRoot(t)
	path := cDaemon(t)
	shared := filepath.Join(t.TempDir(), "a,b")
	require.NoError(t, os.Mkdir(shared, 0o755))
	sock := filepath.Join(t.TempDir(), "v.sock")
	o, err := Parse([]string{"--shared-dir=" + shared, "--socket-path=" + sock, "--cache=never", "--xattrmap=:prefix:all::user.k,v.:"})
	require.NoError(t, err)
	args, _, err := Translate(o, qemu72(), protection.None, ProbeHost())
	require.NoError(t, err)

	cmd := exec.Command(path, args...)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	t.Cleanup(func() { logFile.Close() })
	cmd.Stdout, cmd.Stderr = logFile, logFile
	output := func() string {
		b, _ := os.ReadFile(logFile.Name())
		return string(b)
	}
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("C virtiofsd %q exited: %v\n%s", args, err, output())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no socket after 10s:\n%s", output())
		time.Sleep(20 * time.Millisecond)
	}
	require.NotContains(t, output(), "unknown option")
}
