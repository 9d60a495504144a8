package virtiofsd

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSyslogAnswers(t *testing.T) {
	dir := t.TempDir()

	dgram := filepath.Join(dir, "dgram")
	dl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dgram, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { dl.Close() })

	stream := filepath.Join(dir, "stream")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stream, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { sl.Close() })

	// A syslog daemon that went away leaves its socket file behind.
	stale := filepath.Join(dir, "stale")
	gone, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stale, Net: "unixgram"})
	require.NoError(t, err)
	require.NoError(t, gone.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	st, err := os.Stat(stale)
	require.NoError(t, err, "a closed datagram socket keeps its file")
	require.NotZero(t, st.Mode()&os.ModeSocket)

	for _, tc := range []struct {
		path string
		want bool
	}{
		{dgram, true},
		{stream, true},
		{stale, false},
		{filepath.Join(dir, "file"), false},
		{filepath.Join(dir, "missing"), false},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			require.Equal(t, tc.want, syslogAnswers(tc.path))
		})
	}
}
