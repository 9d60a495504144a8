package virtiofsd

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// The command lines each Kata launcher gives its virtio_fs_daemon, written
// from the launcher's source at the tag (test/kata runs the launchers
// themselves against kata-virtiofsd).
const (
	goShared = "/run/kata-containers/shared/sandboxes/3f1c9a/shared"
	rsShared = "/run/kata-containers/shared/sandboxes/3f1c9a/ro"
	rsSocket = "/run/vc/vm/3f1c9a/virtiofsd.sock"
)

// kataGo302Argv: Kata 2.x and 3.0.x, virtiofsd.args() in
// src/runtime/virtcontainers/virtiofsd.go (3.0.2), with the default
// virtio_fs_extra_args of configuration-qemu.toml.in.
func kataGo302Argv(cache string, extra ...string) []string {
	return append([]string{"--syslog", "-o", "cache=" + cache, "-o", "no_posix_lock", "-o", "source=" + goShared, "--fd=3", "-f",
		"--thread-pool-size=1", "-o", "announce_submounts"}, extra...)
}

// kataGo4Argv: Kata 3.2+ and 4.x, virtiofsd.args() (4.1.0); qemu.go appends
// --xattr to the extra args when disable_guest_selinux is false.
func kataGo4Argv(xattr bool, extra ...string) []string {
	args := append([]string{"--syslog", "--cache=auto", "--shared-dir=" + goShared, "--fd=3",
		"--thread-pool-size=1", "--announce-submounts"}, extra...)
	if xattr {
		args = append(args, "--xattr")
	}
	return args
}

// runtimeRS41Argv: runtime-rs 4.1.0, virtiofsd_args() in
// src/runtime-rs/crates/resource/src/share_fs/share_virtio_fs_standalone.rs
// lines 75-101, with the default virtio_fs_extra_args
// ["--thread-pool-size=1", "-o", "announce_submounts"]; --xattr last when
// disable_guest_selinux is false.
func runtimeRS41Argv(socket string, xattr bool, extra ...string) []string {
	args := append([]string{"--socket-path", socket, "--shared-dir", rsShared, "--cache", "auto",
		"--thread-pool-size=1", "-o", "announce_submounts"}, extra...)
	if xattr {
		args = append(args, "--xattr")
	}
	return args
}

func TestLaunchersParse(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		cache  CacheMode
		fd     int
		socket string
		xattr  bool
	}{
		{"Go 3.0.2 legacy, cache none", kataGo302Argv("none"), CacheNever, 3, "", false},
		{"Go 3.0.2 legacy, cache auto", kataGo302Argv("auto"), CacheAuto, 3, "", false},
		{"Go 4.1.0", kataGo4Argv(false), CacheAuto, 3, "", false},
		{"Go 4.1.0 with guest SELinux", kataGo4Argv(true), CacheAuto, 3, "", true},
		{"runtime-rs 4.1.0", runtimeRS41Argv(rsSocket, true), CacheAuto, -1, rsSocket, true},
		{"runtime-rs 4.1.0 rootless", runtimeRS41Argv("virtiofsd.sock", false), CacheAuto, -1, "virtiofsd.sock", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			require.Equal(t, "3f1c9a", o.SandboxID)
			require.Equal(t, tc.cache, o.Cache)
			require.Equal(t, tc.fd, o.FD)
			require.Equal(t, tc.socket, o.SocketPath)
			require.Equal(t, tc.xattr, o.XattrEnabled())
			require.True(t, o.AnnounceSubmounts, "every launcher asks for submounts by default")
			require.Equal(t, 1, o.ThreadPoolSize)
		})
	}
}

// TestLaunchersTranslate: each launcher's argv for each upstream flavour and
// protection.
func TestLaunchersTranslate(t *testing.T) {
	rustNS := "--no-announce-submounts"
	cases := []struct {
		name       string
		args       []string
		daemon     Daemon
		protection protection.Protection
		want       []string
	}{
		// Go 3.0.2.
		{"Go 3.0.2 → Rust none", kataGo302Argv("none"), rust113(), protection.None, kataGo302Argv("none")},
		{"Go 3.0.2 → Rust no-submounts", kataGo302Argv("none"), rust113(), protection.NoSubmounts,
			[]string{"--syslog", "-o", "cache=none", "-o", "no_posix_lock", "-o", "source=" + goShared, "--fd=3", "-f",
				"--thread-pool-size=1", rustNS}},
		{"Go 3.0.2 → C none", kataGo302Argv("none"), qemu72(), protection.None,
			[]string{"--syslog", "--fd=3", "-o", "source=" + goShared, "-o", "cache=none", "--thread-pool-size=1",
				"-o", "announce_submounts", "-o", "no_killpriv_v2"}},
		{"Go 3.0.2 → C no-submounts", kataGo302Argv("auto"), qemu72(), protection.NoSubmounts,
			[]string{"--syslog", "--fd=3", "-o", "source=" + goShared, "-o", "cache=auto", "--thread-pool-size=1",
				"-o", "no_killpriv_v2"}},
		// Go 4.1.0, --xattr appended after the extra args.
		{"Go 4.1.0 → Rust no-submounts", kataGo4Argv(true), rust113(), protection.NoSubmounts,
			[]string{"--syslog", "--cache=auto", "--shared-dir=" + goShared, "--fd=3", "--thread-pool-size=1", "--xattr", rustNS}},
		{"Go 4.1.0 → C no-submounts", kataGo4Argv(true), qemu72(), protection.NoSubmounts,
			[]string{"--syslog", "--fd=3", "-o", "source=" + goShared, "-o", "cache=auto", "--thread-pool-size=1",
				"-o", "xattr", "-o", "no_killpriv_v2"}},
		// An annotation's virtio_fs_extra_args are appended to the
		// configured ones: a disabling flag there, then an enabling one,
		// then Kata's --xattr.
		{"Go 4.1.0 annotation → Rust no-submounts", kataGo4Argv(true, "--no-announce-submounts", "-o", "announce_submounts", "--announce-submounts"),
			rust113(), protection.NoSubmounts,
			[]string{"--syslog", "--cache=auto", "--shared-dir=" + goShared, "--fd=3", "--thread-pool-size=1", "--xattr", rustNS}},
		// runtime-rs 4.1.0.
		{"runtime-rs → Rust none", runtimeRS41Argv(rsSocket, true), rust113(), protection.None, runtimeRS41Argv(rsSocket, true)},
		{"runtime-rs → Rust no-submounts", runtimeRS41Argv(rsSocket, true), rust113(), protection.NoSubmounts,
			[]string{"--socket-path", rsSocket, "--shared-dir", rsShared, "--cache", "auto", "--thread-pool-size=1", "--xattr", rustNS}},
		{"runtime-rs annotation → Rust no-submounts", runtimeRS41Argv(rsSocket, false, "-o", "xattr,announce_submounts"),
			rust113(), protection.NoSubmounts,
			[]string{"--socket-path", rsSocket, "--shared-dir", rsShared, "--cache", "auto", "--thread-pool-size=1", "-o", "xattr", rustNS}},
		{"runtime-rs → C none", runtimeRS41Argv(rsSocket, true), qemu72(), protection.None,
			[]string{"--socket-path=" + rsSocket, "-o", "source=" + rsShared, "-o", "cache=auto", "--thread-pool-size=1",
				"-o", "xattr", "-o", "announce_submounts", "-o", "no_killpriv_v2"}},
		{"runtime-rs → C no-submounts", runtimeRS41Argv(rsSocket, false), qemu72(), protection.NoSubmounts,
			[]string{"--socket-path=" + rsSocket, "-o", "source=" + rsShared, "-o", "cache=auto", "--thread-pool-size=1",
				"-o", "no_killpriv_v2"}},
		// A Rust virtiofsd from before announcing was its default has no
		// --no-announce-submounts: not asking is enough.
		{"runtime-rs → old Rust no-submounts", runtimeRS41Argv(rsSocket, false), without(rust113(), "--no-announce-submounts"), protection.NoSubmounts,
			[]string{"--socket-path", rsSocket, "--shared-dir", rsShared, "--cache", "auto", "--thread-pool-size=1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			got, _, err := Translate(o, tc.daemon, tc.protection, withSyslog)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			if tc.protection == protection.NoSubmounts && tc.daemon.Supports(rustNS) {
				require.Equal(t, rustNS, got[len(got)-1], "the last of the announce flags wins in Rust virtiofsd")
			}
		})
	}
}

// Every launcher's argv is one kata-virtiofsd's own daemon serves.
func TestLaunchersServe(t *testing.T) {
	for name, args := range map[string][]string{
		"Go 3.0.2":   kataGo302Argv("none"),
		"Go 4.1.0":   kataGo4Argv(true),
		"runtime-rs": runtimeRS41Argv(rsSocket, true),
	} {
		t.Run(name, func(t *testing.T) {
			o, err := Parse(args)
			require.NoError(t, err)
			harmless, err := CheckServe(o)
			require.NoError(t, err)
			require.Empty(t, harmless)
		})
	}
}

// requireListeningAt asserts that fd is a listening socket bound to path.
func requireListeningAt(t *testing.T, fd int, path string) {
	t.Helper()
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	require.Equal(t, path, sa.(*unix.SockaddrUnix).Name)
	c, err := net.DialTimeout("unix", path, time.Second)
	require.NoError(t, err, "a front-end's connection waits in the backlog")
	c.Close()
}

// TestListen: runtime-rs has the daemon create its socket; kata-virtiofsd
// creates it before the daemon starts, so that it can say the socket is
// ready, and hands it over as --fd in place of the socket options.
func TestListen(t *testing.T) {
	t.Run("absolute path", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "virtiofsd.sock")
		o, err := Parse(runtimeRS41Argv(sock, true))
		require.NoError(t, err)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		require.GreaterOrEqual(t, o.FD, 3)
		requireListeningAt(t, o.FD, sock)
		fd := "--fd=" + strconv.Itoa(o.FD)
		require.Equal(t, []string{fd, "--shared-dir", rsShared, "--cache", "auto", "--thread-pool-size=1", "-o", "announce_submounts", "--xattr"},
			argTokens(o))
		require.Empty(t, o.SocketPath)
		given, _ := o.Given("fd")
		require.Equal(t, fd, given)

		got, _, err := Translate(o, rust113(), protection.NoSubmounts, withSyslog)
		require.NoError(t, err)
		require.Equal(t, []string{fd, "--shared-dir", rsShared, "--cache", "auto", "--thread-pool-size=1", "--xattr", "--no-announce-submounts"}, got)
		got, _, err = Translate(o, qemu72(), protection.NoSubmounts, withSyslog)
		require.NoError(t, err)
		require.Equal(t, []string{fd, "-o", "source=" + rsShared, "-o", "cache=auto", "--thread-pool-size=1", "-o", "xattr", "-o", "no_killpriv_v2"}, got)

		var b strings.Builder
		require.NoError(t, AnnounceReady(&b, o))
		require.Equal(t, "kata-virtiofsd: Waiting for vhost-user socket connection... ("+sock+")\n", b.String())

		flags, err := unix.FcntlInt(uintptr(o.FD), unix.F_GETFD, 0)
		require.NoError(t, err)
		require.NotZero(t, flags&unix.FD_CLOEXEC, "only an exec of the daemon may inherit it")
		require.NoError(t, unix.Close(o.FD))
		removeSocket()
		_, err = os.Lstat(sock)
		require.ErrorIs(t, err, os.ErrNotExist, "remove deletes the socket")
	})

	t.Run("relative path in the working directory, as runtime-rs rootless", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		o, err := Parse(runtimeRS41Argv("virtiofsd.sock", false))
		require.NoError(t, err)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		defer removeSocket()
		defer unix.Close(o.FD)
		st, err := os.Lstat(filepath.Join(dir, "virtiofsd.sock"))
		require.NoError(t, err)
		require.NotZero(t, st.Mode()&os.ModeSocket)
		requireListeningAt(t, o.FD, "virtiofsd.sock")
	})

	t.Run("every socket option replaced", func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "s.sock")
		o, err := Parse([]string{"--socket=" + filepath.Join(dir, "old.sock"), "--socket-group=0", "--shared-dir=/srv", "--socket-path=" + sock})
		require.NoError(t, err)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		defer removeSocket()
		defer unix.Close(o.FD)
		require.Equal(t, []string{"--fd=" + strconv.Itoa(o.FD), "--shared-dir=/srv"}, argTokens(o))
		require.Empty(t, o.SocketGroup)
		st, err := os.Stat(sock)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o660), st.Mode().Perm(), "the socket group may connect")
		_, err = os.Lstat(filepath.Join(dir, "old.sock"))
		require.ErrorIs(t, err, os.ErrNotExist, "the last socket option wins, as in Rust")
	})

	t.Run("stale socket replaced", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "virtiofsd.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		require.NoError(t, err)
		l.SetUnlinkOnClose(false)
		l.Close()
		o, err := Parse(runtimeRS41Argv(sock, false))
		require.NoError(t, err)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		defer removeSocket()
		defer unix.Close(o.FD)
		requireListeningAt(t, o.FD, sock)
	})

	t.Run("fd given: nothing to do", func(t *testing.T) {
		o, err := Parse(kataGo4Argv(true))
		require.NoError(t, err)
		before := argTokens(o)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		removeSocket()
		require.Equal(t, before, argTokens(o))
		require.Equal(t, 3, o.FD)
		var b strings.Builder
		require.NoError(t, AnnounceReady(&b, o))
		require.Equal(t, "kata-virtiofsd: Waiting for vhost-user socket connection... (fd 3)\n", b.String())
	})

	t.Run("--print-capabilities: no socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "virtiofsd.sock")
		o, err := Parse([]string{"--print-capabilities", "--socket-path=" + sock})
		require.NoError(t, err)
		removeSocket, err := Listen(o)
		require.NoError(t, err)
		removeSocket()
		require.Equal(t, -1, o.FD)
		require.NoFileExists(t, sock)
	})

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) string
		group string
		is    error
		want  string
	}{
		{"a file at the path", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "virtiofsd.sock")
			require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
			return p
		}, "", errdefs.ErrAlreadyExists, "exists and is not a socket"},
		{"path too long", func(t *testing.T) string {
			return "/" + strings.Repeat("d", 120) + "/virtiofsd.sock"
		}, "", errdefs.ErrInvalidArgument, "more than a unix socket address holds"},
		{"unknown group", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "virtiofsd.sock")
		}, "no-such-group-ksg", errdefs.ErrInvalidArgument, "--socket-group no-such-group-ksg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := runtimeRS41Argv(tc.setup(t), false)
			if tc.group != "" {
				args = append(args, "--socket-group="+tc.group)
			}
			o, err := Parse(args)
			require.NoError(t, err)
			_, err = Listen(o)
			require.ErrorIs(t, err, tc.is)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, -1, o.FD, "o unchanged")
		})
	}
}

func argTokens(o *Options) []string {
	var out []string
	for _, a := range o.Args {
		out = append(out, a.Tokens...)
	}
	return slices.Clip(out)
}
