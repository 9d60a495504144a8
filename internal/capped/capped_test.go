package capped

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		writes []string
		want   string
	}{
		{"under the cap", 10, []string{"abc", "de"}, "abcde"},
		{"cut inside a write", 4, []string{"abc", "def"}, "abcd"},
		{"nothing after the cap", 3, []string{"abc", "def", "g"}, "abc"},
		{"zero keeps nothing", 0, []string{"abc"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &Writer{W: &b, N: tc.n}
			for _, s := range tc.writes {
				n, err := w.Write([]byte(s))
				require.NoError(t, err)
				require.Equal(t, len(s), n, "every byte reported written")
			}
			require.Equal(t, tc.want, b.String())
		})
	}
}
