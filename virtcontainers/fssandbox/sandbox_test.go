package fssandbox

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		err  bool
	}{
		{"", ModeNamespace, false},
		{"namespace", ModeNamespace, false},
		{"chroot", ModeChroot, false},
		{"none", ModeNone, false},
		{"Namespace", "", true},
		{"jail", "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			m, err := ParseMode(tc.in)
			if tc.err {
				require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
				require.ErrorContains(t, err, "want namespace, chroot or none")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, m)
		})
	}
}

func TestKeptCapabilities(t *testing.T) {
	m := KeptMask()
	for _, c := range []int{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_MKNOD} {
		require.NotZero(t, m&(1<<uint(c)), "capability %d a passthrough file system needs is dropped", c)
	}
	// CAP_DAC_READ_SEARCH: open_by_handle_at opens any file of a mounted
	// filesystem by handle, outside the share ("Shocker").
	for _, c := range []int{unix.CAP_SYS_ADMIN, unix.CAP_SYS_CHROOT, unix.CAP_SYS_PTRACE, unix.CAP_NET_ADMIN, unix.CAP_SYS_MODULE, unix.CAP_SETPCAP, unix.CAP_DAC_READ_SEARCH} {
		require.Zero(t, m&(1<<uint(c)), "capability %d would let the daemon leave its sandbox", c)
	}
}

func TestSetupOutsideChild(t *testing.T) {
	t.Setenv(envStage, "")
	_, err := Setup()
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
}

func TestSpawnNone(t *testing.T) {
	_, err := Spawn(ModeNone, "/", nil, nil, nil, nil)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}
