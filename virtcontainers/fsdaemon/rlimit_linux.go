package fsdaemon

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// defaultNofile is what Rust virtiofsd raises RLIMIT_NOFILE to when
// --rlimit-nofile is not given, capped by fs.nr_open: the daemon holds an
// O_PATH descriptor for every inode the guest knows.
const defaultNofile = 1_000_000

// nofilePlan is what to do with RLIMIT_NOFILE.
type nofilePlan struct {
	set      bool // false: leave the limits alone
	want     syscall.Rlimit
	explicit bool // from --rlimit-nofile: failing is an error
}

// planNofile decides as Rust virtiofsd 1.13 does: --rlimit-nofile=N sets both
// limits to N (N above fs.nr_open is an error), 0 leaves them alone; not
// given, the soft limit is raised to min(defaultNofile, fs.nr_open) unless it
// is there already. nrOpen 0 means unknown.
func planNofile(requested *uint64, cur syscall.Rlimit, nrOpen uint64) (nofilePlan, error) {
	if requested != nil {
		n := *requested
		if n == 0 {
			return nofilePlan{}, nil
		}
		if nrOpen > 0 && n > nrOpen {
			return nofilePlan{}, fmt.Errorf("serve: --rlimit-nofile=%d is above fs.nr_open (%d), the kernel's limit: give at most %d: %w",
				n, nrOpen, nrOpen, errdefs.ErrInvalidArgument)
		}
		return nofilePlan{set: true, want: syscall.Rlimit{Cur: n, Max: n}, explicit: true}, nil
	}
	target := uint64(defaultNofile)
	if nrOpen > 0 && nrOpen < target {
		target = nrOpen
	}
	if cur.Cur >= target {
		return nofilePlan{}, nil
	}
	return nofilePlan{set: true, want: syscall.Rlimit{Cur: target, Max: max(cur.Max, target)}}, nil
}

// setRlimitNofile applies planNofile's decision to this process. Raising the
// hard limit needs CAP_SYS_RESOURCE, which root lacks in some containers: an
// explicit --rlimit-nofile then fails with an error saying so, and the
// default falls back to the hard limit (as Rust virtiofsd does), with a
// message.
func setRlimitNofile(ctx context.Context, requested *uint64) error {
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		return fmt.Errorf("serve: get RLIMIT_NOFILE: %w", err)
	}
	plan, err := planNofile(requested, cur, readNrOpen())
	if err != nil || !plan.set {
		return err
	}
	// syscall.Setrlimit, not unix's: it tells the runtime not to restore the
	// old limit in the sandbox child it starts.
	err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &plan.want)
	switch {
	case err == nil:
		log.G(ctx).WithField("rlimit_nofile", plan.want.Cur).Debug("file descriptor limit set")
		return nil
	case plan.explicit && plan.want.Max > cur.Max:
		return fmt.Errorf("serve: --rlimit-nofile=%d: raising the hard limit above %d needs CAP_SYS_RESOURCE, which this process lacks: "+
			"give at most %d, or leave the option out: %w", plan.want.Cur, cur.Max, cur.Max, err)
	case plan.explicit:
		return fmt.Errorf("serve: --rlimit-nofile=%d: %w", plan.want.Cur, err)
	}
	fallback := syscall.Rlimit{Cur: cur.Max, Max: cur.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &fallback); err != nil {
		return fmt.Errorf("serve: set RLIMIT_NOFILE to its hard limit %d: %w", cur.Max, err)
	}
	log.G(ctx).WithField("rlimit_nofile", cur.Max).WithField("wanted", plan.want.Cur).
		Info("cannot raise the file descriptor limit (no CAP_SYS_RESOURCE): using the hard limit")
	return nil
}

// readNrOpen returns fs.nr_open, the most RLIMIT_NOFILE can be; 0 if unknown.
func readNrOpen() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
