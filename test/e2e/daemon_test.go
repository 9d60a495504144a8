package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDaemonCommandKeepsKataArgv(t *testing.T) {
	path, args := daemonCommand("/bin/kvfs", "/up", ProtectNoSubmounts, "/s", "/st")
	require.Equal(t, "/bin/kvfs", path)
	require.Equal(t, []string{
		"--syslog", "--cache=auto", "--shared-dir=/s", "--fd=3", "--thread-pool-size=1", "--announce-submounts",
		"--guard-protection=no-submounts", "--guard-upstream=/up", "--guard-state-dir=/st",
	}, args)
}
