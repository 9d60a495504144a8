package virtiofsd

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

type serveVerdict string

const (
	honoured serveVerdict = "honoured"
	harmless serveVerdict = "harmless"
	refused  serveVerdict = "error"
)

// serveShare is a command line for the serve target without the option
// under test.
func serveShare(extra ...string) []string {
	return append([]string{"--shared-dir=/srv", "--socket-path=/run/v.sock"}, extra...)
}

// serveTable is what kata-virtiofsd's own daemon does with each option of
// Rust virtiofsd 1.13 (README, "Serve mode").
var serveTable = []struct {
	args    []string
	verdict serveVerdict
}{
	{kataArgv(), honoured},
	{[]string{"--shared-dir=/srv", "--fd=3"}, honoured},
	{serveShare("--tag=myfs"), refused},
	{[]string{"--shared-dir=/srv", "--socket=/run/v.sock"}, honoured},
	{serveShare("--socket-group=kvm"), honoured},
	{serveShare("--thread-pool-size=4"), honoured},
	{serveShare("--xattr"), honoured},
	{serveShare("-o", "xattr"), honoured},
	{serveShare("--posix-acl"), refused},
	{serveShare("-o", "posix_acl"), refused},
	{serveShare("--xattrmap=:map::user.virtiofs.:"), refused},
	{serveShare("-o", "xattrmap=:map::user.virtiofs.:"), refused},
	{serveShare("--sandbox=namespace"), honoured},
	{serveShare("--sandbox=chroot"), honoured},
	{serveShare("--sandbox=none"), honoured},
	{serveShare("-o", "sandbox=chroot"), honoured},
	{serveShare("--readonly"), honoured},
	{serveShare("--seccomp=none"), honoured},
	{serveShare("--seccomp=kill"), honoured},
	{serveShare("--seccomp=log"), honoured},
	{serveShare("--seccomp=trap"), honoured},
	{serveShare("--announce-submounts"), honoured},
	{serveShare("--no-announce-submounts"), honoured},
	{serveShare("-o", "announce_submounts"), honoured},
	{serveShare("--inode-file-handles=never"), honoured},
	{serveShare("--inode-file-handles=prefer"), harmless},
	{serveShare("--inode-file-handles=fallback"), harmless},
	{serveShare("--inode-file-handles=mandatory"), refused},
	{serveShare("--cache=auto"), honoured},
	{serveShare("--cache=always"), honoured},
	{serveShare("--cache=never"), honoured},
	{serveShare("--cache=metadata"), honoured},
	{serveShare("-o", "cache=none"), honoured},
	{serveShare("--allow-mmap"), honoured},
	{serveShare("--cache=never", "--allow-mmap"), honoured},
	{serveShare("--no-readdirplus"), honoured},
	{serveShare("-o", "no_readdirplus"), honoured},
	{serveShare("--writeback"), refused},
	{serveShare("-o", "writeback"), refused},
	{serveShare("--allow-direct-io"), honoured},
	{serveShare("-o", "allow_direct_io"), honoured},
	{[]string{"--print-capabilities"}, honoured},
	{serveShare("--modcaps=+sys_admin:-chown"), refused},
	{serveShare("-o", "modcaps=+sys_admin"), refused},
	{serveShare("--log-level=error"), honoured},
	{serveShare("--log-level=warn"), honoured},
	{serveShare("--log-level=info"), honoured},
	{serveShare("--log-level=debug"), honoured},
	{serveShare("--log-level=trace"), honoured},
	{serveShare("--log-level=off"), honoured},
	{serveShare("-o", "loglevel=debug"), honoured},
	{serveShare("-d"), honoured},
	{serveShare("--syslog"), honoured},
	{serveShare("--rlimit-nofile=4096"), honoured},
	{serveShare("--rlimit-nofile=0"), honoured},
	{serveShare("--no-killpriv-v2"), honoured},
	{serveShare("-o", "no_killpriv_v2"), honoured},
	{serveShare("--killpriv-v2"), refused},
	{serveShare("-o", "killpriv_v2"), refused},
	{serveShare("--security-label"), refused},
	{serveShare("-o", "security_label"), refused},
	{serveShare("--preserve-noatime"), honoured},
	{serveShare("--uid-map=:0:1000:1:"), refused},
	{serveShare("--gid-map=:0:1000:1:"), refused},
	{serveShare("--translate-uid=guest:0:1000:1"), refused},
	{serveShare("--translate-gid=host:0:1000:1"), refused},
	{serveShare("--migration-mode=find-paths"), harmless},
	{serveShare("--migration-mode=file-handles"), refused},
	{serveShare("--migration-on-error=abort"), harmless},
	{serveShare("--migration-on-error=guest-error"), refused},
	{serveShare("--migration-verify-handles"), refused},
	{serveShare("--migration-confirm-paths"), refused},
	{serveShare("-f"), honoured},
	{serveShare("-o", "no_flock,no_posix_lock"), honoured},
	{serveShare("-o", "source=/srv2"), honoured},
	{[]string{"--help"}, honoured},
	{[]string{"-h"}, honoured},
	{[]string{"--version"}, honoured},
	{[]string{"-V"}, honoured},
}

func TestCheckServe(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range serveTable {
		name := strings.Join(tc.args, " ")
		if slices.Equal(tc.args, kataArgv()) {
			name = "Kata's argv"
		}
		t.Run(name, func(t *testing.T) {
			o, err := Parse(tc.args)
			require.NoError(t, err)
			for _, a := range o.Args {
				covered[a.Name] = true
			}
			// The option under test is the last argument given.
			last := o.Args[len(o.Args)-1]
			given := strings.Join(last.Tokens, " ")
			ignored, err := CheckServe(o)
			switch tc.verdict {
			case honoured:
				require.NoError(t, err)
				require.Empty(t, ignored)
			case harmless:
				require.NoError(t, err)
				require.Equal(t, []string{given}, ignored)
			case refused:
				require.ErrorIs(t, err, errdefs.ErrNotImplemented)
				require.Nil(t, ignored)
				require.ErrorContains(t, err, "kata-virtiofsd's own virtio-fs daemon cannot honour "+given+":")
			}
		})
	}
	// Every option of Rust virtiofsd 1.13 is in the table.
	for _, opt := range append(slices.Clone(rust113Options), "-o", "-d", "-f", "-h", "-V") {
		require.True(t, covered[opt], "%s is missing from serveTable", opt)
	}
}

func TestCheckServeNamesEveryRefusal(t *testing.T) {
	o, err := Parse(kataArgv("--readonly", "--writeback", "--tag=t", "-o", "xattrmap=:map::a.:",
		"--inode-file-handles=prefer", "--uid-map=:0:1000:1:", "--migration-confirm-paths"))
	require.NoError(t, err)
	ignored, err := CheckServe(o)
	require.Nil(t, ignored)
	require.ErrorIs(t, err, errdefs.ErrNotImplemented)
	require.EqualError(t, err, "kata-virtiofsd's own virtio-fs daemon cannot honour -o xattrmap=:map::a.:, --writeback, "+
		"--tag=t, --uid-map=:0:1000:1:, --migration-confirm-paths: remove them from Kata's "+
		"virtio_fs_extra_args (the README lists what serve mode supports): not implemented")
}

func TestCheckServeOptionsBuiltInCode(t *testing.T) {
	// Options made without Parse (fsdaemon's tests, the sandbox child) have
	// zero values where Parse sets Rust's defaults: nothing to refuse.
	ignored, err := CheckServe(&Options{SharedDir: "/srv", FD: -1, SocketPath: "/s"})
	require.NoError(t, err)
	require.Empty(t, ignored)
	_, err = CheckServe(&Options{SharedDir: "/srv", FD: -1, SocketPath: "/s", ReadOnly: true, Writeback: true})
	require.EqualError(t, err, "kata-virtiofsd's own virtio-fs daemon cannot honour --writeback: remove it from Kata's "+
		"virtio_fs_extra_args (the README lists what serve mode supports): not implemented")
}

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]logrus.Level{
		"error": logrus.ErrorLevel, "warn": logrus.WarnLevel, "info": logrus.InfoLevel,
		"debug": logrus.DebugLevel, "trace": logrus.TraceLevel, "off": logrus.PanicLevel,
	} {
		require.Equal(t, want, LogLevel(in), in)
	}
}
