package guest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseConsole(t *testing.T) {
	r := &Result{Scenario: BindDetach, Pressure: Memory, ShareDev: 24, VolumeDev: 25, Outcome: EBADF,
		Ops: []Op{{Name: "readdir", Errno: "EBADF", Error: "bad file descriptor"}}}
	console := "[    1.0] booting\r\nnoise " + r.Line() + "\r\n[    2.0] reboot: Power down\r\n"
	got, err := ParseConsole([]byte(console))
	require.NoError(t, err)
	require.Equal(t, r, got)
	require.True(t, got.Submount())

	_, err = ParseConsole([]byte("kernel panic\n"))
	require.ErrorContains(t, err, "no \"KSG-RESULT\" line")
	_, err = ParseConsole([]byte(ResultPrefix + "{truncated\n"))
	require.ErrorContains(t, err, "parse result line")
}

func TestParseLines(t *testing.T) {
	pr := POSIXResult{Check: "xattr", Outcome: POSIXFail, MS: 12, Detail: "line one\nline \"two\""}
	console := "[    0.5] booting\r\n" +
		"KSG-CHECK mount ok\r\n" +
		"[    1.0] virtio-fs: noise KSG-CHECK write_file FAIL open /share/x: permission denied\r\n" +
		"KSG-BENCH readdir_10k 2000000 10000\r\n" +
		pr.Line() + "\r\n" +
		"KSG-SAMPLE\r\nKSG-DONE\r\n"
	l, err := ParseLines([]byte(console))
	require.NoError(t, err)
	require.True(t, l.Done)
	require.Equal(t, map[string]string{"mount": CheckOK, "write_file": "FAIL open /share/x: permission denied"}, l.Checks)
	require.Equal(t, map[string]Bench{"readdir_10k": {NS: 2000000, Units: 10000}}, l.Bench)
	require.Equal(t, []POSIXResult{pr}, l.POSIX)

	l, err = ParseLines([]byte("KSG-CHECK mount ok\n"))
	require.NoError(t, err)
	require.False(t, l.Done, "a guest that stopped early")

	for _, bad := range []string{"KSG-BENCH x 1\n", "KSG-BENCH x y 1\n", "KSG-CHECK \n", "KSG-POSIX {\"check\":\n"} {
		_, err := ParseLines([]byte(bad))
		require.Error(t, err, bad)
	}
}
