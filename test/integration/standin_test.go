package integration

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/standin-shim/standin"
)

// TestStandinAlone checks the harness and the stand-in without our shim: a
// ctr container and a CRI pod run on the stand-in, which takes Kata's runtime
// options (runc alone would fail on them) and records what Kata would load.
func TestStandinAlone(t *testing.T) {
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=/nonexistent/kata.toml"}})

	t.Run("ctr", func(t *testing.T) {
		out, stderr, err := c.ctr(ctrNamespace, "run", "--rm", "--runtime", standinRuntime,
			"--runtime-config-path", "/etc/kata-test/c.toml", testImage, "standin-ctr", "echo", "hello from busybox")
		require.NoError(t, err, "%s\n%s", stderr, c.log())
		require.Equal(t, "hello from busybox\n", out)
		rec, err := standin.ReadCreateRecord(c.recordDir, "standin-ctr")
		require.NoError(t, err)
		require.Equal(t, "/etc/kata-test/c.toml", rec.ConfigPath)
		require.Equal(t, "runtime-options", rec.ConfigSource)
		require.Equal(t, "runtimeoptions.v1.Options", rec.OptionsType)
		srec, err := standin.ReadStartRecord(c.recordDir, "standin-ctr")
		require.NoError(t, err)
		require.Equal(t, "/etc/kata-test/c.toml", srec.StdinConfigPath)
	})

	t.Run("cri", func(t *testing.T) {
		c.useCRI(t)
		p := pod{name: "standin-pod"}
		podID, stderr, err := c.runPod(t, "standin", p)
		require.NoError(t, err, "%s\n%s", stderr, c.log())
		cid := c.startContainer(t, podID, p, "sh", "sleep", "1000")
		out, stderr, err := c.crictl("exec", cid, "echo", "exec works")
		require.NoError(t, err, stderr)
		require.Equal(t, "exec works", out)
		rec, err := standin.ReadCreateRecord(c.recordDir, podID)
		require.NoError(t, err)
		require.Equal(t, "/nonexistent/kata.toml", rec.ConfigPath)
		require.Equal(t, "env", rec.ConfigSource)
		c.removePod(t, podID)
	})
}
