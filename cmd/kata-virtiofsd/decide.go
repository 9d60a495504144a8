package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// planReader reads the plan of one sandbox from a state dir; plan.Read.
type planReader func(stateDir, sandboxID string) (*plan.Plan, error)

// decision is how one share is served and why.
type decision struct {
	protection     protection.Protection
	protectionFrom string // "--guard-protection", "plan" or "--guard-no-plan"
	upstream       string // "" when none is configured
	upstreamFrom   string // "--guard-upstream", "plan" or "default upstream_virtiofsd"
	planPath       string
	plan           *plan.Plan
	// noPlan says why there is no plan; empty when there is one.
	noPlan string
}

// decide combines the --guard-* options with the sandbox's plan. Our options
// override the plan. Without a plan (the sandbox was not created through
// kata-submount-guard's shim, or the share is not a Kata sandbox share) the
// protection is --guard-no-plan's, by default none, and the upstream is
// defaultUpstream ([submount_guard]'s default upstream_virtiofsd) when it
// exists: exactly what Kata would run, never less. A plan that cannot be
// read, belongs to another sandbox or refuses the sandbox is an error.
func decide(o *virtiofsd.Options, read planReader, defaultUpstream string) (decision, error) {
	var d decision
	switch {
	case o.SandboxID == "" && o.SharedDir == "":
		d.noPlan = "no shared directory"
	case o.SandboxID == "":
		d.noPlan = fmt.Sprintf("shared directory %s is not a Kata sandbox share (.../sandboxes/<id>/shared or, from runtime-rs, .../sandboxes/<id>/ro)", o.SharedDir)
	default:
		d.planPath = statedir.PlanPath(o.Guard.StateDir, o.SandboxID)
		pl, err := read(o.Guard.StateDir, o.SandboxID)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errdefs.IsNotFound(err):
			d.noPlan = fmt.Sprintf("no plan for sandbox %s at %s", o.SandboxID, d.planPath)
		case err != nil:
			return d, fmt.Errorf("reading the plan of sandbox %s (%s): %w; fix or remove the file", o.SandboxID, d.planPath, err)
		case pl == nil:
			d.noPlan = fmt.Sprintf("no plan for sandbox %s at %s", o.SandboxID, d.planPath)
		case pl.SandboxID != o.SandboxID:
			return d, fmt.Errorf("plan %s is for sandbox %q, not %q: remove the file, or check --guard-state-dir: %w",
				d.planPath, pl.SandboxID, o.SandboxID, errdefs.ErrFailedPrecondition)
		case pl.Action == plan.Refuse:
			return d, fmt.Errorf("plan %s refuses sandbox %s: %s: %w", d.planPath, o.SandboxID, pl.Reason, errdefs.ErrFailedPrecondition)
		default:
			switch pl.Protection {
			case protection.None, protection.NoSubmounts, protection.Recover:
			default:
				return d, fmt.Errorf("plan %s has protection %q, want %s, %s or %s: %w", d.planPath, pl.Protection,
					protection.Recover, protection.NoSubmounts, protection.None, errdefs.ErrInvalidArgument)
			}
			d.plan = pl
		}
	}

	switch {
	case o.Guard.Protection != "":
		d.protection, d.protectionFrom = o.Guard.Protection, "--guard-protection"
	case d.plan != nil:
		d.protection, d.protectionFrom = d.plan.Protection, "plan"
	case o.Guard.NoPlan == virtiofsd.NoPlanFail:
		return d, fmt.Errorf("%s and --guard-no-plan=%s: create the sandbox through kata-submount-guard's "+
			"containerd-shim-kata-v2, set --guard-state-dir to its state_dir, or pass --guard-protection: %w",
			d.noPlan, virtiofsd.NoPlanFail, errdefs.ErrFailedPrecondition)
	default:
		d.protection, d.protectionFrom = protection.Protection(o.Guard.NoPlan), "--guard-no-plan"
	}

	switch {
	case o.Guard.Upstream != "":
		d.upstream, d.upstreamFrom = o.Guard.Upstream, "--guard-upstream"
	case d.plan != nil && d.plan.UpstreamVirtiofsd != "":
		d.upstream, d.upstreamFrom = d.plan.UpstreamVirtiofsd, "plan"
	case d.plan == nil && defaultUpstream != "" && exists(defaultUpstream):
		// What the shim would have put in the plan: the table is not
		// readable from here, but its default is known.
		d.upstream, d.upstreamFrom = defaultUpstream, upstreamFromDefault
	}
	return d, nil
}

// upstreamFromDefault is decision.upstreamFrom for the default upstream.
const upstreamFromDefault = "default upstream_virtiofsd"

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
