package installer

import (
	"context"
	"time"

	"github.com/containerd/log"
)

// Run is the DaemonSet: wait for kata-deploy's node label, then Apply every
// Interval, and soon after any change to containerd's or the shims'
// configuration directories, until ctx ends (SIGTERM), leaving the node
// guarded.
func (in *Installer) Run(ctx context.Context) error {
	if in.opt.Nodes != nil && in.opt.NodeName != "" {
		logged := false
		for {
			labels, err := in.opt.Nodes.Labels(ctx, in.opt.NodeName)
			if err == nil && labels[KataRuntimeLabel] == "true" {
				break
			}
			if err != nil {
				log.G(ctx).WithError(err).Warn("read node labels")
			} else if !logged {
				log.G(ctx).Infof("waiting for node label %s=true (kata-deploy)", KataRuntimeLabel)
				logged = true
			}
			if !sleep(ctx, in.opt.Interval) {
				return nil
			}
		}
	}
	for {
		w := in.watch()
		reports, err := in.Apply(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.G(ctx).WithError(err).Error("apply failed; will retry")
		} else {
			for _, r := range reports {
				log.G(ctx).WithFields(log.Fields{"shim": r.Shim, "guarded": r.Guarded, "verdict": r.Verdict, "protected": r.Protected}).Debug("shim")
			}
		}
		if !w.wait(ctx, in.opt.Interval) {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
