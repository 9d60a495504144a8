package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// Input is what the decision for one sandbox is made from.
type Input struct {
	// Resolved is the configuration from config.Resolve (annotations
	// already applied to the hypervisor tables).
	Resolved *config.Resolved
	// Annotations of the sandbox's config.json, for steps that need them.
	Annotations map[string]string
	SandboxID   string
	// ContainerType is how the container relates to a sandbox; a container
	// that joins a pod gets no decision of its own.
	ContainerType ContainerType
	// Inspector inspects guest kernels. Required: Decide fails without one
	// rather than decide without looking.
	Inspector Inspector
	// InspectAlways inspects the kernel even when the policy would not
	// need it (on_vulnerable = on_unknown = off, protection none), so that
	// kata-runtime can report the verdict.
	InspectAlways bool
}

// step is one part of the decision. It reads the input and the plan so far,
// updates the plan, and returns done=true when later steps must not run.
type step struct {
	name string
	run  func(ctx context.Context, in *Input, p *plan.Plan) (done bool, err error)
}

// Decide runs the decision's steps in order over in and returns the
// sandbox's plan. The plan starts as "allow, no protection"; each step may
// change it. A step's error is returned as it is, without a plan: it is the
// line the user reads (the shim prints it), so it says what to fix, and the
// step is named in the log only.
func Decide(ctx context.Context, in Input) (*plan.Plan, error) {
	if in.Resolved == nil {
		return nil, fmt.Errorf("decide: no resolved configuration: %w", errdefs.ErrInvalidArgument)
	}
	if in.ContainerType == PodContainer {
		return nil, fmt.Errorf("decide: container %s joins a sandbox; the decision was made when the sandbox was created: %w", in.SandboxID, errdefs.ErrInvalidArgument)
	}
	if in.Inspector == nil {
		return nil, fmt.Errorf("decide: no guest kernel inspector: %w", errdefs.ErrInvalidArgument)
	}
	r := in.Resolved
	p := &plan.Plan{
		SandboxID:         in.SandboxID,
		ConfigPath:        r.Path,
		ConfigSource:      string(r.Source),
		DelegateKind:      string(r.Delegate),
		Hypervisor:        r.HypervisorName,
		Action:            plan.Allow,
		Protection:        protection.None,
		UpstreamVirtiofsd: r.Guard.UpstreamVirtiofsd,
		Created:           time.Now().UTC(),
	}
	if r.Ambiguous() {
		for _, h := range r.Hypervisors {
			p.HypervisorCandidates = append(p.HypervisorCandidates, h.Name)
		}
	}
	logger := log.G(ctx).WithField("sandbox", in.SandboxID)
	steps := []step{
		{"shared-fs", sharedFSStep},
		{"guest-kernel", guestKernelStep},
		{"virtiofsd-protection", protectionStep},
	}
	for _, st := range steps {
		done, err := st.run(ctx, &in, p)
		if err != nil {
			logger.WithField("step", st.name).WithError(err).Debug("step failed")
			return nil, err
		}
		logger.WithField("step", st.name).WithField("action", p.Action).Debug("step ran")
		if done {
			break
		}
	}
	return p, nil
}

// actionFor maps a policy word to the action it asks for.
func actionFor(pol config.Policy) plan.Action {
	switch pol {
	case config.PolicyRefuse:
		return plan.Refuse
	case config.PolicyWarn:
		return plan.Warn
	}
	return plan.Allow
}

func actionRank(a plan.Action) int {
	switch a {
	case plan.Refuse:
		return 2
	case plan.Warn:
		return 1
	}
	return 0
}
