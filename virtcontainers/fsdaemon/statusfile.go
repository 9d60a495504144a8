package fsdaemon

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// envStatusFD names the descriptor on which a sandboxed daemon with
// protection recover sends its recovery counters, one JSON line each, for
// the parent to write the status file (the sandbox cannot reach state_dir).
const envStatusFD = "KSG_FSSERVER_STATUS_FD"

// statusFile keeps <state_dir>/status/<sandbox-id>.json (Status)
// of a share served with protection recover. A nil *statusFile does nothing:
// other protections, or a share that is not a Kata sandbox's.
type statusFile struct {
	path   string
	mu     sync.Mutex
	status Status
	failed bool
}

func newStatusFile(ctx context.Context, o *virtiofsd.Options) *statusFile {
	if o.Protection != protection.Recover || o.SandboxID == "" {
		return nil
	}
	s := &statusFile{
		path: statedir.StatusPath(o.Guard.StateDir, o.SandboxID),
		status: Status{
			SandboxID: o.SandboxID, Protection: string(o.Protection), PID: os.Getpid(), Running: true,
			RecoveryStats: passthroughfs.RecoveryStats{MaxHeld: passthroughfs.DefaultMaxHeld},
		},
	}
	s.change(ctx, func(*Status) {})
	return s
}

// update records the counters of the running daemon.
func (s *statusFile) update(ctx context.Context, st passthroughfs.RecoveryStats) {
	s.change(ctx, func(status *Status) { status.RecoveryStats = st })
}

// finish records that the daemon has ended, with its last counters.
func (s *statusFile) finish(ctx context.Context) {
	s.change(ctx, func(status *Status) { status.Running = false })
}

// change applies f to the status and writes it; a nil statusFile (no
// status for this share) does nothing.
func (s *statusFile) change(ctx context.Context, f func(*Status)) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
	s.writeLocked(ctx)
}

// writeLocked replaces the file; a failure is logged once and the share is
// served regardless.
func (s *statusFile) writeLocked(ctx context.Context) {
	s.status.Updated = time.Now().UTC()
	if err := writeStatus(s.path, &s.status); err != nil && !s.failed {
		s.failed = true
		log.G(ctx).WithError(err).Warn("cannot write the recovery status file; recoveries are still logged")
	}
}

// relay reads the counters the sandboxed daemon sends on r until it closes.
func (s *statusFile) relay(ctx context.Context, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var st passthroughfs.RecoveryStats
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			log.G(ctx).WithError(err).Warn("sandboxed daemon sent a bad status line")
			continue
		}
		s.update(ctx, st)
	}
}

// childStatusReporter is the sandboxed daemon's side of relay: nil without
// a status descriptor.
func childStatusReporter(ctx context.Context) func(passthroughfs.RecoveryStats) {
	v := os.Getenv(envStatusFD)
	if v == "" {
		return nil
	}
	_ = os.Unsetenv(envStatusFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		log.G(ctx).WithField(envStatusFD, v).Warn("sandboxed daemon: bad status descriptor; no status file")
		return nil
	}
	f := os.NewFile(uintptr(fd), "recovery status")
	enc := json.NewEncoder(f)
	return func(st passthroughfs.RecoveryStats) { _ = enc.Encode(st) }
}
