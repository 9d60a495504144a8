package fsserver

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// sessionSpy is a file system that records what the device tells it about
// sessions; GetAttr blocks while hold is set.
type sessionSpy struct {
	fuse.RawFileSystem
	mu     sync.Mutex
	events []string
	hold   chan struct{}
	inAttr atomic.Int32
}

func (s *sessionSpy) record(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *sessionSpy) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

func (s *sessionSpy) Reset() { s.record("reset") }

func (s *sessionSpy) SetKernelCapabilities(flags uint64) {
	if flags&fuse.CAP_SUBMOUNTS != 0 {
		s.record("caps:submounts")
	} else {
		s.record("caps:none")
	}
}

func (s *sessionSpy) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	s.inAttr.Add(1)
	defer s.inAttr.Add(-1)
	if s.hold != nil {
		<-s.hold
	}
	s.record("getattr")
	out.Mode = syscall.S_IFDIR | 0o755
	return fuse.OK
}

func spySession(t *testing.T, ctx context.Context, spy *sessionSpy, nreq int) *session {
	t.Helper()
	spy.RawFileSystem = fuse.NewDefaultRawFileSystem()
	return startSessionCtx(t, ctx, spy, &fuse.MountOptions{MaxWrite: 1 << 20}, nreq, 2, vut.FeatureVersion1)
}

// Before INIT there is no session: requests get EIO (FORGETs, which have
// no reply, get none) and reach neither go-fuse nor the file system.
func TestDeviceAnswersEIOBeforeInit(t *testing.T) {
	spy := &sessionSpy{}
	s := spySession(t, context.Background(), spy, 1)
	c := s.clients[0]
	errno, err := c.Getattr()
	require.NoError(t, err)
	require.Equal(t, syscall.EIO, errno)
	_, err = c.Call(opForget, fuse.FUSE_ROOT_ID, fst.InBody(&fuse.ForgetIn{Nlookup: 1}), nil, -1)
	require.NoError(t, err)
	require.Empty(t, spy.log(), "a request before INIT reached the file system")

	_, err = c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	errno, err = c.Getattr()
	require.NoError(t, err)
	require.Zero(t, errno)
	require.Equal(t, []string{"caps:submounts", "getattr"}, spy.log())
}

// An INIT that fails changes nothing: no reset of the running session, no
// new capabilities (a guest toggling FUSE_SUBMOUNTS with failing INITs used
// to flip announcing under the session's inodes).
func TestDeviceFailedInitChangesNothing(t *testing.T) {
	spy := &sessionSpy{}
	s := spySession(t, context.Background(), spy, 1)
	c := s.clients[0]
	_, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	for _, tc := range []struct {
		name         string
		major, minor uint32
	}{
		{"wrong_major", 8, 36},
		{"minor_too_old", 7, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errno, err := c.InitVersion(tc.major, tc.minor, 0)
			require.NoError(t, err)
			require.Equal(t, syscall.EIO, errno)
			require.Equal(t, []string{"caps:submounts"}, spy.log())
		})
	}
	// A good second INIT (a rebooted guest) starts a new session.
	errno, err := c.InitVersion(7, 36, 0)
	require.NoError(t, err)
	require.Zero(t, errno)
	require.Equal(t, []string{"caps:submounts", "reset", "caps:none"}, spy.log())
}

// A second INIT (a rebooted guest) or a DESTROY waits for the session's
// requests in flight: the reset must not run under one of them.
func TestDeviceSessionResetWaitsForRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset func(c *fst.Client) error
		want  []string
	}{
		{"second_init", func(c *fst.Client) error { _, err := c.Init(fst.GuestInitFlags); return err },
			[]string{"caps:submounts", "getattr", "reset", "caps:submounts"}},
		{"destroy", func(c *fst.Client) error { _, err := c.Call(opDestroy, 0, nil, nil, 0); return err },
			[]string{"caps:submounts", "getattr", "reset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spy := &sessionSpy{hold: make(chan struct{})}
			s := spySession(t, context.Background(), spy, 2)
			_, err := s.clients[0].Init(fst.GuestInitFlags)
			require.NoError(t, err)
			attrDone := make(chan error, 1)
			go func() { _, err := s.clients[0].Getattr(); attrDone <- err }()
			require.Eventually(t, func() bool { return spy.inAttr.Load() == 1 }, 5*time.Second, time.Millisecond)
			resetDone := make(chan error, 1)
			go func() { resetDone <- tc.reset(s.clients[1]) }()
			time.Sleep(100 * time.Millisecond)
			close(spy.hold)
			require.NoError(t, <-attrDone)
			require.NoError(t, <-resetDone)
			require.Equal(t, tc.want, spy.log(), "the session was reset under a request in flight")
		})
	}
}

// A guest repeating a request go-fuse complains about (here an opcode
// nobody implements) gets its answer each time, but the host's log one
// line per interval.
func TestDeviceRateLimitsGuestTriggeredWarnings(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	spy := &sessionSpy{}
	s := spySession(t, ctx, spy, 1)
	c := s.clients[0]
	_, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	for range 40 {
		r, err := c.Call(9999, fuse.FUSE_ROOT_ID, nil, nil, 0)
		require.NoError(t, err)
		require.Equal(t, syscall.ENOSYS, r.Errno)
		errno, err := c.InitVersion(9, 0, 0)
		require.NoError(t, err)
		require.Equal(t, syscall.EIO, errno)
	}
	n := map[string]int{}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			n[strings.SplitN(e.Message, " ", 2)[0]]++
		}
	}
	for msg, k := range n {
		require.LessOrEqual(t, k, 1, "%q logged %d times for 40 requests", msg, k)
	}
	require.NotEmpty(t, n, "the first of each warning is logged")
}
