package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// sharedFSStep ends the decision early when the guest mounts no virtio-fs
// share: the submount bug lives in the guest's FUSE-over-virtio-fs code.
func sharedFSStep(ctx context.Context, in *Input, p *plan.Plan) (bool, error) {
	var kinds []string
	for _, h := range in.Resolved.Hypervisors {
		if h.Config.IsVirtioFS() {
			return false, nil
		}
		kind := h.Config.SharedFS
		if kind == "" {
			kind = "none"
		}
		kinds = append(kinds, fmt.Sprintf("[hypervisor.%s] shared_fs = %s", h.Name, kind))
	}
	p.Action = plan.Allow
	p.Protection = protection.None
	p.Kernel = verdict.Report{Path: in.Resolved.Hypervisor.Kernel, Verdict: verdict.Unknown, Evidence: verdict.EvidenceNone,
		Reason: "not inspected: no virtio-fs share"}
	p.Reason = fmt.Sprintf("%s: the guest mounts no virtio-fs share, so the FUSE submount bug cannot occur", strings.Join(kinds, ", "))
	return true, nil
}

// guestKernelStep inspects the guest kernel of every hypervisor table Kata
// may use and turns the strictest verdict into an action by the policy.
func guestKernelStep(ctx context.Context, in *Input, p *plan.Plan) (bool, error) {
	g := in.Resolved.Guard
	guardOff := g.OnVulnerable == config.PolicyOff && g.OnUnknown == config.PolicyOff && g.VirtiofsProtection == protection.None
	if guardOff && !in.InspectAlways {
		p.Action = plan.Allow
		p.Kernel = verdict.Report{Path: in.Resolved.Hypervisor.Kernel, Verdict: verdict.Unknown, Evidence: verdict.EvidenceNone,
			Reason: "not inspected: the guard is off"}
		p.Reason = fmt.Sprintf("submount guard is off in %s (on_vulnerable = off, on_unknown = off, virtiofs_protection = none)", in.Resolved.Path)
		return true, nil
	}

	opts := verdict.Options{FixedReleases: g.FixedReleases, CacheDir: statedir.KernelCacheDir(g.StateDir)}
	reports := map[string]verdict.Report{}
	first := true
	for _, h := range in.Resolved.Hypervisors {
		if !h.Config.IsVirtioFS() {
			continue
		}
		rep, ok := reports[h.Config.Kernel]
		if !ok {
			var err error
			if rep, err = inspect(ctx, in.Inspector, h.Config.Kernel, opts); err != nil {
				return false, err
			}
			reports[h.Config.Kernel] = rep
		}
		action := plan.Allow
		switch rep.Verdict {
		case verdict.Vulnerable:
			action = actionFor(g.OnVulnerable)
		case verdict.Unknown:
			action = actionFor(g.OnUnknown)
		}
		p.KernelInspected = true
		if first || actionRank(action) > actionRank(p.Action) ||
			(actionRank(action) == actionRank(p.Action) && rep.Verdict.Severity() > p.Kernel.Verdict.Severity()) {
			p.Action, p.Kernel, p.Hypervisor = action, rep, h.Name
			first = false
		}
	}
	if guardOff {
		p.Action = plan.Allow
	}
	p.Reason = kernelReason(in.Resolved, p)
	return false, nil
}

// inspect fails only when the inspector cannot inspect at all (an
// InspectorError): an image that cannot be read or understood is "unknown",
// never "fixed".
func inspect(ctx context.Context, insp Inspector, path string, opts verdict.Options) (verdict.Report, error) {
	rep, err := insp.Inspect(ctx, path, opts)
	if ie := (*InspectorError)(nil); errors.As(err, &ie) {
		return verdict.Report{}, err
	}
	if err != nil || rep == nil {
		if err == nil {
			err = fmt.Errorf("inspector returned no report")
		}
		log.G(ctx).WithError(err).WithField("kernel", path).Warn("guest kernel inspection failed")
		out := verdict.Report{Path: path, Verdict: verdict.Unknown, Evidence: verdict.EvidenceNone,
			Reason: "inspection failed: " + err.Error(), Error: err.Error()}
		if rep != nil {
			out = *rep
			out.Verdict, out.Error = verdict.Unknown, err.Error()
		}
		return out, nil
	}
	out := *rep
	if out.Path == "" {
		out.Path = path
	}
	switch out.Verdict {
	case verdict.Fixed, verdict.Vulnerable, verdict.Unaffected, verdict.Unknown:
	default:
		out.Reason = fmt.Sprintf("inspector gave unrecognised verdict %q", out.Verdict)
		out.Verdict = verdict.Unknown
	}
	return out, nil
}

func kernelReason(r *config.Resolved, p *plan.Plan) string {
	k := p.Kernel
	what := "guest kernel " + k.Path
	if k.Version != "" {
		what += " (" + k.Version + ")"
	} else if k.Release != "" {
		what += " (" + k.Release + ")"
	}
	evidence := ""
	if k.Evidence != "" && k.Evidence != verdict.EvidenceNone {
		evidence = fmt.Sprintf(" (evidence: %s)", k.Evidence)
	}
	g := r.Guard
	switch k.Verdict {
	case verdict.Fixed:
		return fmt.Sprintf("%s carries the FUSE submount fix (Linux c4d361f66ac9)%s", what, evidence)
	case verdict.Unaffected:
		return fmt.Sprintf("%s predates FUSE submounts (Linux 5.10) and is not affected%s", what, evidence)
	case verdict.Vulnerable:
		s := fmt.Sprintf("%s lacks the FUSE submount fix (Linux c4d361f66ac9; fixed in 6.7, 6.6.8, 6.1.70, 5.15.146)%s; on_vulnerable = %s", what, evidence, g.OnVulnerable)
		if p.Action == plan.Refuse {
			return s + fmt.Sprintf(": sandbox creation refused. Boot a fixed kernel, or set [submount_guard] on_vulnerable = \"warn\" in %s", r.Path)
		}
		return s
	default:
		detail := k.Reason
		if detail == "" {
			detail = "no evidence"
		}
		s := fmt.Sprintf("fix status of %s cannot be determined (%s); on_unknown = %s", what, detail, g.OnUnknown)
		hint := "list its release (uname -r) in [submount_guard] fixed_releases"
		if k.Release != "" {
			hint = fmt.Sprintf("add %q to [submount_guard] fixed_releases", k.Release)
		}
		if p.Action == plan.Refuse {
			return s + fmt.Sprintf(": sandbox creation refused. If this kernel carries the fix, %s in %s", hint, r.Path)
		}
		return s + fmt.Sprintf("; if this kernel carries the fix, %s", hint)
	}
}
