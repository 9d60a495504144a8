package vhostuser

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWarnLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &WarnLimiter{Interval: 10 * time.Second, now: func() time.Time { return now }}
	type step struct {
		after      time.Duration
		reason     string
		ok         bool
		suppressed int
	}
	for i, s := range []step{
		{0, "bad chain", true, 0},
		{time.Second, "bad chain", false, 0},
		{time.Second, "bad chain", false, 0},
		{0, "unknown opcode", true, 0}, // reasons are limited apart
		{9 * time.Second, "bad chain", true, 2},
		{time.Second, "bad chain", false, 0},
		{10 * time.Second, "bad chain", true, 1},
		{10 * time.Second, "bad chain", true, 0},
	} {
		now = now.Add(s.after)
		ok, n := l.Allow(s.reason)
		require.Equal(t, s.ok, ok, "step %d", i)
		require.Equal(t, s.suppressed, n, "step %d", i)
	}
	// Reasons made from guest data cannot grow the limiter without bound.
	for i := range 10 * maxReasons {
		l.Allow(fmt.Sprint("reason ", i))
	}
	require.LessOrEqual(t, len(l.reasons), maxReasons+1)
}
