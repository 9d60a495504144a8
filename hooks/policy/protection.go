package policy

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// ourVirtiofsd is the base name of our daemon. Only a sandbox whose
// virtio_fs_daemon is kata-virtiofsd (directly or through a symlink) reads
// its plan, so only there can a protection be applied.
const ourVirtiofsd = "kata-virtiofsd"

// protectionStep chooses how virtiofsd serves a sandbox that goes on with a
// vulnerable or unknown guest kernel.
func protectionStep(ctx context.Context, in *Input, p *plan.Plan) (bool, error) {
	p.Protection = protection.None
	if p.Action == plan.Refuse {
		return false, nil
	}
	if p.Kernel.Verdict != verdict.Vulnerable && p.Kernel.Verdict != verdict.Unknown {
		return false, nil
	}
	want := in.Resolved.Guard.VirtiofsProtection
	if want == protection.None {
		p.Unprotected = true
		p.UnprotectedReason = "virtiofs_protection = none: virtiofsd runs as Kata configured it"
		p.Reason += "; unprotected: " + p.UnprotectedReason
		return false, nil
	}
	daemon := hypervisorOf(in.Resolved, p.Hypervisor).VirtioFSDaemon
	if !isOurDaemon(in.Resolved, daemon) {
		p.Unprotected, p.ProtectionUnavailable = true, true
		p.UnprotectedReason = fmt.Sprintf("virtiofs_protection = %s cannot be applied: virtio_fs_daemon %s is not %s; set virtio_fs_daemon (and valid_virtio_fs_daemon_paths) of [hypervisor.%s] to kata-virtiofsd's path in %s",
			want, daemon, ourVirtiofsd, p.Hypervisor, in.Resolved.Path)
		p.Reason += "; unprotected: " + p.UnprotectedReason
		return false, nil
	}
	p.Protection = want
	switch want {
	case protection.NoSubmounts:
		p.Reason += "; protection no-submounts: virtiofsd will not announce submounts"
	case protection.Recover:
		p.Reason += "; protection recover: kata-virtiofsd serves the share itself and recovers submount roots the guest forgets"
	default:
		p.Reason += fmt.Sprintf("; protection %s", want)
	}
	return false, nil
}

func hypervisorOf(r *config.Resolved, name string) config.Hypervisor {
	for _, h := range r.Hypervisors {
		if h.Name == name {
			return h.Config
		}
	}
	return r.Hypervisor
}

// isOurDaemon follows a symlinked daemon as the host does (under the
// configuration's Root when it was resolved from outside the host's mount
// namespace), so that a link's name is never taken for its target's.
func isOurDaemon(r *config.Resolved, path string) bool {
	if path == "" {
		return false
	}
	if filepath.Base(path) == ourVirtiofsd {
		return true
	}
	resolved, err := r.EvalSymlinks(path)
	return err == nil && filepath.Base(resolved) == ourVirtiofsd
}
