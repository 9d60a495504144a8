package harness

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDaemonSpecKeepsKataArgv(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec DaemonSpec
		want []string
	}{
		{"guard options after Kata's", DaemonSpec{Protection: ProtectNoSubmounts, Upstream: "/up", StateDir: "/st"}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--guard-protection=no-submounts", "--guard-upstream=/up", "--guard-state-dir=/st",
		}},
		{"extra virtiofsd options before ours", DaemonSpec{Extra: []string{"--xattr"}, Protection: ProtectRecover}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--xattr", "--guard-protection=recover",
		}},
		{"state dir only: the plan decides", DaemonSpec{StateDir: "/st"}, []string{
			"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
			"--guard-state-dir=/st",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.spec.Args("/s"))
		})
	}
}
