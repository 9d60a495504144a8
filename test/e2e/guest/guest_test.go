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
