package statedir

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLayout is the contract: operators, README and older binaries know
// these paths.
func TestLayout(t *testing.T) {
	cases := []struct {
		name string
		got  string
		want string
	}{
		{"default", Default, "/run/kata-containers/submount-guard"},
		{"plan", PlanPath(Default, "sb-1"), "/run/kata-containers/submount-guard/sb-1.json"},
		{"status dir", statusDir("/s"), "/s/status"},
		{"status", StatusPath("/s", "sb-1"), "/s/status/sb-1.json"},
		{"kernel cache", KernelCacheDir("/s"), "/s/kernel-cache"},
		{"virtiofsd cache", VirtiofsdCacheDir("/s"), "/s/virtiofsd-cache"},
		{"delegate cache", DelegateCacheDir("/s"), "/s/delegate-cache"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.got)
		})
	}
}
