package virtiofsd

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// rust113 and qemu72 are the options the real daemons' --help lists
// (TestDetectRealDaemons checks these lists against the binaries).
var (
	rust113Options = []string{"--allow-direct-io", "--allow-mmap", "--announce-submounts", "--cache", "--fd",
		"--gid-map", "--help", "--inode-file-handles", "--killpriv-v2", "--log-level", "--migration-confirm-paths",
		"--migration-mode", "--migration-on-error", "--migration-verify-handles", "--modcaps",
		"--no-announce-submounts", "--no-killpriv-v2", "--no-readdirplus", "--posix-acl", "--preserve-noatime",
		"--print-capabilities", "--readonly", "--rlimit-nofile", "--sandbox", "--seccomp", "--security-label",
		"--shared-dir", "--socket", "--socket-group", "--socket-path", "--syslog", "--tag", "--thread-pool-size",
		"--translate-gid", "--translate-uid", "--uid-map", "--version", "--writeback", "--xattr", "--xattrmap"}
	qemu72Options = []string{"--daemonize", "--fd", "--help", "--print-capabilities", "--rlimit-nofile",
		"--socket-group", "--socket-path", "--syslog", "--thread-pool-size", "--version", "allow_direct_io",
		"allow_root", "announce_submounts", "cache", "flock", "killpriv_v2", "log_level", "max_idle_threads",
		"modcaps", "no_allow_direct_io", "no_flock", "no_killpriv_v2", "no_posix_acl", "no_posix_lock",
		"no_readdirplus", "no_security_label", "no_writeback", "no_xattr", "posix_acl", "posix_lock",
		"readdirplus", "sandbox", "security_label", "source", "timeout", "writeback", "xattr", "xattrmap"}
)

func rust113() Daemon {
	return Daemon{Path: "/usr/libexec/virtiofsd", Flavour: FlavourRust, Version: "1.13.2", Options: rust113Options}
}

func qemu72() Daemon {
	return Daemon{Path: "/usr/lib/qemu/virtiofsd", Flavour: FlavourC, Version: "7.2.22", Options: qemu72Options}
}

// without returns d with some options removed, as an older daemon would list.
func without(d Daemon, opts ...string) Daemon {
	d.Options = slices.DeleteFunc(slices.Clone(d.Options), func(s string) bool { return slices.Contains(opts, s) })
	return d
}

// cBase is what the C daemon gets for kataArgv() before the announce and
// killpriv options.
var cBase = []string{"--syslog", "--fd=3", "-o", "source=" + kataShared, "-o", "cache=auto", "--thread-pool-size=1"}

// withSyslog is a host with a syslog daemon; noSyslog one without.
var withSyslog, noSyslog = Host{Syslog: true}, Host{Syslog: false}

func cWith(opts ...string) []string {
	return append(slices.Clone(cBase), opts...)
}

func TestTranslate(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		daemon     Daemon
		protection protection.Protection
		want       []string
	}{
		// Rust → Rust.
		{"rust none: as Kata gave it", kataArgv("--guard-state-dir=/run/x"), rust113(), protection.None, kataArgv()},
		{"rust none keeps token spelling", []string{"--shared-dir", "/srv", "--fd", "3", "-oxattr", "--guard-upstream", "/v"},
			rust113(), protection.None, []string{"--shared-dir", "/srv", "--fd", "3", "-oxattr"}},
		{"rust none adds nothing", []string{"--shared-dir=/srv", "--fd=3"}, rust113(), protection.None,
			[]string{"--shared-dir=/srv", "--fd=3"}},
		{"rust no-submounts", kataArgv("--guard-protection=no-submounts"), rust113(), protection.NoSubmounts,
			[]string{"--syslog", "--cache=auto", "--shared-dir=" + kataShared, "--fd=3", "--thread-pool-size=1", "--no-announce-submounts"}},
		{"rust no-submounts without the flag given", []string{"--shared-dir=/srv", "--fd=3"}, rust113(), protection.NoSubmounts,
			[]string{"--shared-dir=/srv", "--fd=3", "--no-announce-submounts"}},
		{"rust no-submounts edits -o lists", []string{"--shared-dir=/srv", "--fd=3", "-o", "xattr,announce_submounts", "-oannounce_submounts"},
			rust113(), protection.NoSubmounts, []string{"--shared-dir=/srv", "--fd=3", "-o", "xattr", "--no-announce-submounts"}},
		{"rust no-submounts keeps a given --no-announce-submounts", kataArgv("--no-announce-submounts"), rust113(), protection.NoSubmounts,
			[]string{"--syslog", "--cache=auto", "--shared-dir=" + kataShared, "--fd=3", "--thread-pool-size=1", "--no-announce-submounts"}},
		{"rust before announcing was the default", kataArgv(), without(rust113(), "--no-announce-submounts"), protection.NoSubmounts,
			[]string{"--syslog", "--cache=auto", "--shared-dir=" + kataShared, "--fd=3", "--thread-pool-size=1"}},

		// Rust → C.
		{"C none", kataArgv(), qemu72(), protection.None, cWith("-o", "announce_submounts", "-o", "no_killpriv_v2")},
		{"C no-submounts", kataArgv(), qemu72(), protection.NoSubmounts, cWith("-o", "no_killpriv_v2")},
		{"C none without announcing", kataArgv("--no-announce-submounts"), qemu72(), protection.None, cWith("-o", "no_killpriv_v2")},
		{"C cache never", kataArgv("--cache=never", "--no-readdirplus"), qemu72(), protection.NoSubmounts,
			[]string{"--syslog", "--fd=3", "-o", "source=" + kataShared, "-o", "cache=none", "--thread-pool-size=1", "-o", "no_killpriv_v2"}},
		{"C no readdirplus", kataArgv("-o", "no_readdirplus"), qemu72(), protection.NoSubmounts, cWith("-o", "no_readdirplus", "-o", "no_killpriv_v2")},
		{"C xattr family", kataArgv("--posix-acl", "--security-label", "--xattrmap=/prefix/user.virtiofs.,x/x/"), qemu72(), protection.NoSubmounts,
			cWith("-o", "xattr", "-o", "posix_acl", "-o", "security_label", "-o", `xattrmap=/prefix/user.virtiofs.\,x/x/`, "-o", "no_killpriv_v2")},
		{"C log levels", kataArgv("--log-level=trace"), qemu72(), protection.NoSubmounts, cWith("-o", "log_level=debug", "-o", "no_killpriv_v2")},
		{"C -d", kataArgv("-d"), qemu72(), protection.NoSubmounts, cWith("-o", "log_level=debug", "-o", "no_killpriv_v2")},
		{"C log off", kataArgv("--log-level=off"), qemu72(), protection.NoSubmounts, cWith("-o", "log_level=err", "-o", "no_killpriv_v2")},
		{"C sandbox chroot", kataArgv("--sandbox=chroot"), qemu72(), protection.NoSubmounts, cWith("-o", "sandbox=chroot", "-o", "no_killpriv_v2")},
		{"C killpriv", kataArgv("--killpriv-v2"), qemu72(), protection.NoSubmounts, cWith("-o", "killpriv_v2")},
		{"C before killpriv existed", kataArgv(), without(qemu72(), "killpriv_v2", "no_killpriv_v2"), protection.NoSubmounts, cBase},
		{"C the rest", kataArgv("--writeback", "--allow-direct-io", "--modcaps=+sys_admin:-chown", "--rlimit-nofile=4096", "--print-capabilities"),
			qemu72(), protection.NoSubmounts, cWith("-o", "writeback", "-o", "allow_direct_io", "-o", "no_killpriv_v2",
				"-o", "modcaps=+sys_admin:-chown", "--rlimit-nofile=4096", "--print-capabilities")},
		{"C harmless options dropped", kataArgv("-f", "--seccomp=kill", "--inode-file-handles=prefer", "--allow-mmap",
			"--migration-mode=find-paths", "--migration-on-error=abort", "-o", "no_flock,no_posix_lock"),
			qemu72(), protection.NoSubmounts, cWith("-o", "no_killpriv_v2")},
		{"C socket path", []string{"--shared-dir=/srv/a,b", "--socket-path=/run/v.sock", "--socket-group=kvm", "--cache=always"},
			qemu72(), protection.None, []string{"--socket-path=/run/v.sock", "--socket-group=kvm", "-o", `source=/srv/a\,b`, "-o", "cache=always",
				"--thread-pool-size=0", "-o", "announce_submounts", "-o", "no_killpriv_v2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			got, adapted, err := Translate(o, tc.daemon, tc.protection, withSyslog)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Empty(t, adapted)
		})
	}
}

func TestTranslateRefusals(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		daemon     Daemon
		protection protection.Protection
		err        error
		want       string
	}{
		{"recover is ours", kataArgv(), rust113(), protection.Recover, errdefs.ErrInvalidArgument, "served by kata-virtiofsd itself"},
		{"unknown protection", kataArgv(), rust113(), "maybe", errdefs.ErrInvalidArgument, `unknown protection "maybe"`},
		{"unknown flavour", kataArgv(), Daemon{Path: "/x", Flavour: "go"}, protection.None, errdefs.ErrNotImplemented, `unknown flavour "go"`},
		{"old rust lacks a flag", kataArgv("--tag=myfs", "--cache", "metadata"), without(rust113(), "--tag", "--cache"), protection.None,
			errdefs.ErrNotImplemented, "Rust virtiofsd 1.13.2 at /usr/libexec/virtiofsd does not accept --cache=auto, --tag=myfs, --cache metadata"},
		{"C cache metadata", kataArgv("--cache=metadata"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --cache=metadata"},
		{"C compat cache metadata", kataArgv("-o", "cache=metadata"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour -o cache=metadata"},
		{"C readonly", kataArgv("--readonly"), qemu72(), protection.NoSubmounts, errdefs.ErrNotImplemented, "cannot honour --readonly"},
		{"C tag", kataArgv("--tag=myfs"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --tag=myfs"},
		{"C sandbox none", kataArgv("--sandbox", "none"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --sandbox none"},
		{"C seccomp", kataArgv("--seccomp=log"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --seccomp=log"},
		{"C file handles", kataArgv("--inode-file-handles=mandatory"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --inode-file-handles=mandatory"},
		{"C mmap without cache", kataArgv("--cache=never", "--allow-mmap"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --allow-mmap"},
		{"C id maps", kataArgv("--uid-map=:0:1000:1:", "--translate-gid=guest:0:100:10"), qemu72(), protection.None, errdefs.ErrNotImplemented,
			"cannot honour --uid-map=:0:1000:1:, --translate-gid=guest:0:100:10"},
		{"C noatime", kataArgv("--preserve-noatime"), qemu72(), protection.None, errdefs.ErrNotImplemented, "cannot honour --preserve-noatime"},
		{"C migration", kataArgv("--migration-mode=file-handles", "--migration-confirm-paths"), qemu72(), protection.None, errdefs.ErrNotImplemented,
			"cannot honour --migration-mode=file-handles, --migration-confirm-paths"},
		{"C before announcing existed", kataArgv(), without(qemu72(), "announce_submounts"), protection.None, errdefs.ErrNotImplemented,
			"cannot honour --announce-submounts"},
		{"every refusal named", kataArgv("--readonly", "--tag=t", "--cache=metadata"), qemu72(), protection.NoSubmounts, errdefs.ErrNotImplemented,
			"QEMU's C virtiofsd 7.2.22 at /usr/lib/qemu/virtiofsd cannot honour --cache=metadata, --readonly, --tag=t"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			got, _, err := Translate(o, tc.daemon, tc.protection, withSyslog)
			require.Nil(t, got)
			require.ErrorIs(t, err, tc.err)
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("C before announcing existed is fine without submounts", func(t *testing.T) {
		o, err := Parse(kataArgv())
		require.NoError(t, err)
		got, _, err := Translate(o, without(qemu72(), "announce_submounts"), protection.NoSubmounts, withSyslog)
		require.NoError(t, err)
		require.NotContains(t, strings.Join(got, " "), "announce")
	})
}

// TestTranslateSyslog covers the one host-dependent adaptation: the C daemon
// loses Kata's --syslog where no syslog daemon answers at /dev/log.
func TestTranslateSyslog(t *testing.T) {
	cases := []struct {
		name        string
		args        []string
		daemon      Daemon
		host        Host
		wantSyslog  bool
		wantAdapted bool
	}{
		{"C, syslog answers", kataArgv(), qemu72(), withSyslog, true, false},
		{"C, no syslog: dropped", kataArgv(), qemu72(), noSyslog, false, true},
		{"C, not asked for", kataArgv()[1:], qemu72(), noSyslog, false, false},
		{"Rust keeps it without syslog", kataArgv(), rust113(), noSyslog, true, false},
		{"Rust keeps it with syslog", kataArgv(), rust113(), withSyslog, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			got, adapted, err := Translate(o, tc.daemon, protection.NoSubmounts, tc.host)
			require.NoError(t, err)
			require.Equal(t, tc.wantSyslog, slices.Contains(got, "--syslog"), "%q", got)
			if !tc.wantAdapted {
				require.Empty(t, adapted)
				return
			}
			require.Equal(t, []string{"no syslog daemon answers at /dev/log: --syslog is not passed to " +
				"QEMU's C virtiofsd 7.2.22 at /usr/lib/qemu/virtiofsd, which logs to stderr instead " +
				"(with --syslog its seccomp filter would kill it at its first message)"}, adapted)
			// Nothing else changes.
			withIt, _, err := Translate(o, tc.daemon, protection.NoSubmounts, withSyslog)
			require.NoError(t, err)
			require.Equal(t, withIt[1:], got)
		})
	}
}

func TestEscapeFuseOpt(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":     "/plain",
		"/a,b":       `/a\,b`,
		`/a\b`:       `/a\\b`,
		`:map::a,\:`: `:map::a\,\\:`,
	} {
		require.Equal(t, want, escapeFuseOpt(in), in)
	}
}
