package vhostuser

import (
	"encoding/binary"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// The build-tag list of big-endian architectures must agree with the byte
// order the program actually runs with (run under qemu-s390x-static for
// the big-endian side).
func TestCheckHostMatchesByteOrder(t *testing.T) {
	little := binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	require.Equal(t, little, littleEndianHost)
	err := CheckHost()
	if little {
		require.NoError(t, err)
		return
	}
	require.ErrorIs(t, err, errdefs.ErrNotImplemented)
	require.ErrorContains(t, err, "big-endian")
}
