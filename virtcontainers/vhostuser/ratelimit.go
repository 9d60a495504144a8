package vhostuser

import (
	"sync"
	"time"
)

// WarnLimiter lets through one warning per reason and interval, so a guest
// that repeats a bad request cannot flood the host's log. Warnings held
// back are counted and reported with the next one let through.
type WarnLimiter struct {
	// Interval between warnings of one reason; default 10s.
	Interval time.Duration
	// now is the clock (tests replace it).
	now func() time.Time

	mu      sync.Mutex
	reasons map[string]*warnState
}

type warnState struct {
	last       time.Time
	suppressed int
}

// maxReasons bounds the limiter's memory; reasons are fixed strings, so this
// is only a guard against a caller that builds them from guest data.
const maxReasons = 64

// Allow reports whether a warning for reason may be logged now, and how
// many were held back since the last one that was.
func (l *WarnLimiter) Allow(reason string) (ok bool, suppressed int) {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	interval := l.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reasons == nil {
		l.reasons = make(map[string]*warnState)
	}
	s := l.reasons[reason]
	if s == nil {
		if len(l.reasons) >= maxReasons {
			reason, s = "", l.reasons[""]
		}
		if s == nil {
			s = &warnState{}
			l.reasons[reason] = s
			s.last = t
			return true, 0
		}
	}
	if t.Sub(s.last) < interval {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.last, s.suppressed = t, 0
	return true, n
}
