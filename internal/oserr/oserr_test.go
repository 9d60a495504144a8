package oserr

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCause(t *testing.T) {
	_, statErr := os.Stat("/nonexistent/ksg")
	other := errors.New("other")
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"path error", statErr, syscall.ENOENT},
		{"wrapped path error", fmt.Errorf("x: %w", statErr), syscall.ENOENT},
		{"other error", other, other},
		{"nil", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Cause(tc.err))
		})
	}
}
