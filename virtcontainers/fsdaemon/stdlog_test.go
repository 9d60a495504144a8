package fsdaemon

import (
	"strings"
	"testing"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"
)

// go-fuse prints some complaints with the standard logger; the daemon
// routes those through the same rate limit, so a guest repeating a short
// READ cannot flood the host's log either.
func TestServeRateLimitsGoFuseStandardLog(t *testing.T) {
	hook := logtest.NewGlobal()
	t.Cleanup(hook.Reset)
	_, sock, _ := serveParsed(t)
	s := connect(t, sock)
	t.Cleanup(func() { s.f.Close() })
	c := s.clients[0]
	_, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	h := fuse.InHeader{Opcode: fst.OpRead, Length: 40, Unique: 9, NodeId: fuse.FUSE_ROOT_ID}
	for range 30 {
		out, err := c.Q.Do([][]byte{fst.StructBytes(&h)}, []int{64})
		require.NoError(t, err)
		require.Len(t, out, 16)
	}
	n := 0
	for _, e := range hook.AllEntries() {
		if strings.HasPrefix(e.Message, "Short read") {
			n++
		}
	}
	require.Equal(t, 1, n, "want the first short READ logged as a warning, the other 29 held back")
}
