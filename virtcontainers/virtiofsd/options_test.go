package virtiofsd

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

const kataShared = "/run/kata-containers/shared/sandboxes/3f1c9a/shared"

// kataArgv is what Kata 3.x passes with its default virtio_fs_extra_args.
func kataArgv(extra ...string) []string {
	return append([]string{"--syslog", "--cache=auto", "--shared-dir=" + kataShared, "--fd=3",
		"--thread-pool-size=1", "--announce-submounts"}, extra...)
}

func TestParse(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, o *Options)
	}{
		{
			name: "kata default",
			args: kataArgv(),
			check: func(t *testing.T, o *Options) {
				require.True(t, o.Syslog)
				require.Equal(t, CacheAuto, o.Cache)
				require.Equal(t, kataShared, o.SharedDir)
				require.Equal(t, "3f1c9a", o.SandboxID)
				require.Equal(t, 3, o.FD)
				require.Equal(t, 1, o.ThreadPoolSize)
				require.True(t, o.AnnounceSubmounts)
				require.False(t, o.XattrEnabled())
				require.True(t, o.Readdirplus())
				require.Equal(t, SandboxNamespace, o.Sandbox)
				require.Equal(t, "kill", o.Seccomp)
				require.Equal(t, "never", o.InodeFileHandles)
				require.Equal(t, "info", o.LogLevel)
				require.Equal(t, Guard{StateDir: statedir.Default, NoPlan: "none"}, o.Guard)
				require.Empty(t, o.Protection)
				require.Len(t, o.Args, 6)
				require.Equal(t, Arg{Name: "--cache", Value: "auto", Tokens: []string{"--cache=auto"}}, o.Args[1])
			},
		},
		{
			name: "values as separate tokens",
			args: []string{"--cache", "never", "--shared-dir", "/srv/x", "--fd", "3", "--modcaps=-chown"},
			check: func(t *testing.T, o *Options) {
				require.Equal(t, CacheNever, o.Cache)
				require.False(t, o.Readdirplus(), "never has no readdirplus")
				require.Equal(t, "/srv/x", o.SharedDir)
				require.Empty(t, o.SandboxID)
				require.Equal(t, []string{"--cache", "never"}, o.Args[0].Tokens)
				require.Equal(t, "-chown", o.Modcaps)
			},
		},
		{
			name: "case-insensitive values as in Rust",
			args: kataArgv("--cache=Never", "--sandbox=CHROOT", "--log-level=ERROR"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, CacheNever, o.Cache)
				require.Equal(t, SandboxChroot, o.Sandbox)
				require.Equal(t, "error", o.LogLevel)
			},
		},
		{
			name: "last one wins",
			args: kataArgv("--cache=always", "--thread-pool-size=+8", "--shared-dir=/srv/y"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, CacheAlways, o.Cache)
				require.Equal(t, 8, o.ThreadPoolSize)
				require.Equal(t, "/srv/y", o.SharedDir)
				require.Empty(t, o.SandboxID)
			},
		},
		{
			name: "-o applies after every flag",
			args: kataArgv("-o", "cache=none,xattr", "--cache=always"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, CacheNever, o.Cache)
				require.True(t, o.Xattr)
				given, ok := o.Given("cache")
				require.True(t, ok)
				require.Equal(t, "-o cache=none", given)
			},
		},
		{
			name: "-o spellings and short clusters",
			args: kataArgv("-oxattr", "-o=writeback", "-do", "allow_direct_io", "-f"),
			check: func(t *testing.T, o *Options) {
				require.True(t, o.Xattr)
				require.True(t, o.Writeback)
				require.True(t, o.AllowDirectIO)
				require.True(t, o.Foreground)
				require.Equal(t, "debug", o.LogLevel)
				names := []string{}
				for _, a := range o.Args[6:] {
					names = append(names, a.Name+"="+a.Value)
				}
				require.Equal(t, []string{"-o=xattr", "-o=writeback", "-d=", "-o=allow_direct_io", "-f="}, names)
				require.Equal(t, []string{"-o", "allow_direct_io"}, o.Args[9].Tokens)
			},
		},
		{
			name: "-d beats --log-level",
			args: kataArgv("-d", "--log-level=warn"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, "debug", o.LogLevel)
			},
		},
		{
			name: "no-announce-submounts",
			args: kataArgv("--no-announce-submounts"),
			check: func(t *testing.T, o *Options) {
				require.False(t, o.AnnounceSubmounts)
			},
		},
		{
			name: "announce again after no-announce",
			args: kataArgv("--no-announce-submounts", "--announce-submounts"),
			check: func(t *testing.T, o *Options) {
				require.True(t, o.AnnounceSubmounts)
			},
		},
		{
			name: "-o announce_submounts does not undo --no-announce-submounts",
			args: kataArgv("--no-announce-submounts", "-o", "announce_submounts"),
			check: func(t *testing.T, o *Options) {
				require.False(t, o.AnnounceSubmounts)
			},
		},
		{
			name: "xattr implied",
			args: kataArgv("--posix-acl"),
			check: func(t *testing.T, o *Options) {
				require.False(t, o.Xattr)
				require.True(t, o.XattrEnabled())
			},
		},
		{
			name: "guard options",
			args: kataArgv("--guard-protection=no-submounts", "--guard-upstream", "/usr/libexec/../libexec/virtiofsd",
				"--guard-state-dir=/var/run/ksg/", "--guard-no-plan=fail"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, Guard{Protection: protection.NoSubmounts, Upstream: "/usr/libexec/virtiofsd",
					StateDir: "/var/run/ksg", NoPlan: NoPlanFail}, o.Guard)
			},
		},
		{
			name: "socket path instead of fd",
			args: []string{"--shared-dir=/srv", "--socket-path=/run/vfs.sock", "--socket-group=kvm", "--rlimit-nofile=0"},
			check: func(t *testing.T, o *Options) {
				require.Equal(t, -1, o.FD)
				require.Equal(t, "/run/vfs.sock", o.SocketPath)
				require.Equal(t, "kvm", o.SocketGroup)
				require.NotNil(t, o.RlimitNofile)
				require.Zero(t, *o.RlimitNofile)
			},
		},
		{
			name: "print-capabilities needs nothing else",
			args: []string{"--print-capabilities"},
			check: func(t *testing.T, o *Options) {
				require.True(t, o.PrintCapabilities)
			},
		},
		{
			name: "help needs nothing else",
			args: []string{"-h"},
			check: func(t *testing.T, o *Options) {
				require.True(t, o.Help)
			},
		},
		{
			name: "repeatable maps",
			args: kataArgv("--uid-map=:0:100000:65536:", "--uid-map", ":65536:200000:10:", "--translate-gid=guest:0:100:10"),
			check: func(t *testing.T, o *Options) {
				require.Equal(t, []string{":0:100000:65536:", ":65536:200000:10:"}, o.UIDMap)
				require.Equal(t, []string{"guest:0:100:10"}, o.TranslateGID)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			tc.check(t, o)
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown long", kataArgv("--bogus"), `"--bogus": not an option`},
		{"unknown short", kataArgv("-x"), `"-x": -x is not an option`},
		{"positional", kataArgv("extra"), "takes no positional arguments"},
		{"bad cache", kataArgv("--cache=fast"), "--cache must be one of auto, always, never, metadata"},
		{"value missing at end", kataArgv("--cache"), "--cache needs a value"},
		{"value looks like an option", []string{"--shared-dir", "--fd=3"}, "--shared-dir needs a value"},
		{"flag with value", kataArgv("--xattr=true"), "--xattr takes no value"},
		{"require equals", kataArgv("--inode-file-handles", "prefer"), "needs its value after '='"},
		{"fd not a number", kataArgv("--fd=abc"), "--fd must be a non-negative decimal integer"},
		{"fd negative", kataArgv("--fd=-1"), "--fd must be a non-negative"},
		{"pool negative", kataArgv("--thread-pool-size=-1"), "--thread-pool-size must be"},
		{"empty tag", kataArgv("--tag="), "1 to 36 bytes"},
		{"long tag", kataArgv("--tag=" + strings.Repeat("t", 37)), "1 to 36 bytes"},
		{"seccomp is case-sensitive", kataArgv("--seccomp=Kill"), "--seccomp must be one of"},
		{"compat without value", kataArgv("-o", "cache"), "-o cache is not a compat option"},
		{"compat two equals", kataArgv("-o", "xattrmap=a=b"), "one '=' per option"},
		{"compat unknown", kataArgv("-o", "XATTR"), "-o XATTR is not a compat option"},
		{"compat C-only", kataArgv("-o", "flock"), "-o flock is not a compat option"},
		{"compat bad cache", kataArgv("-o", "cache=never"), "-o cache must be one of auto, always, none, metadata"},
		{"compat empty item", kataArgv("-o", "xattr,"), "-o  is not a compat option"},
		{"-o without value", kataArgv("-o"), "-o needs a value"},
		{"fd and socket path", kataArgv("--socket-path=/s"), "--fd cannot be used with --socket-path"},
		{"fd and group", kataArgv("--socket-group=kvm"), "--socket-group cannot be used with --fd"},
		{"no shared dir", []string{"--fd=3"}, "missing --shared-dir"},
		{"empty shared dir", []string{"--fd=3", "-o", "source="}, "the shared directory is empty"},
		{"no socket", []string{"--shared-dir=/srv"}, "missing --fd=N or --socket-path"},
		{"relative upstream", kataArgv("--guard-upstream=virtiofsd"), "absolute path"},
		{"relative state dir", kataArgv("--guard-state-dir=state"), "absolute directory"},
		{"bad protection", kataArgv("--guard-protection=off"), "--guard-protection must be one of recover, no-submounts, none"},
		{"bad no-plan", kataArgv("--guard-no-plan=warn"), "--guard-no-plan must be one of none, no-submounts, recover, fail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.Nil(t, o)
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSandboxIDFromSharedDir(t *testing.T) {
	cases := []struct {
		dir, id string
	}{
		{"/run/kata-containers/shared/sandboxes/3f1c9a/shared", "3f1c9a"},
		{"/run/kata-containers/shared/sandboxes/3f1c9a/shared/", "3f1c9a"},
		{"/run/user/1000/run/kata-containers/shared/sandboxes/pod_1.a-b/shared", "pod_1.a-b"},
		{"/run/kata-containers/shared/sandboxes/3f1c9a/ro", "3f1c9a"},
		{"/run/user/1000/run/kata-containers/shared/sandboxes/3f1c9a/ro/", "3f1c9a"},
		{"/run/kata-containers/shared/sandboxes/3f1c9a/rw", ""},
		{"/run/kata-containers/shared/sandboxes/3f1c9a/mounts", ""},
		{"/run/kata-containers/shared/containers/3f1c9a/ro", ""},
		{"/run/kata-containers/shared/containers/3f1c9a/shared", ""},
		{"/run/kata-containers/shared/sandboxes/.hidden/shared", ""},
		{"/run/kata-containers/shared/sandboxes/a/shared", ""},
		{"/run/kata-containers/shared/sandboxes/a b/shared", ""},
		{"/srv/share", ""},
		{"shared", ""},
		{"", ""},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			id, ok := sandboxIDFromSharedDir(tc.dir)
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.id != "", ok)
		})
	}
}
