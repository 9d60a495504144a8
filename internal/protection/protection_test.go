package protection

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValid(t *testing.T) {
	cases := []struct {
		in   Protection
		want bool
	}{
		{"recover", true},
		{"no-submounts", true},
		{"none", true},
		{"", false},
		{"Recover", false},
		{"nosubmounts", false},
	}
	for _, tc := range cases {
		t.Run(string(tc.in), func(t *testing.T) {
			require.Equal(t, tc.want, tc.in.Valid())
		})
	}
	for _, p := range All() {
		require.True(t, p.Valid(), p)
	}
}
