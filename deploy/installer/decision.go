package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// resolveShim resolves the shim's configuration as our shim does at
// sandbox creation when containerd passes the handler's ConfigPath (config.d
// merged, ours included), with the host's paths under HOST_ROOT. The
// delegate's kind is the pinned delegate_kind, else where kata-deploy put
// its shim: Go and runtime-rs resolve a table differently (hypervisor_name,
// the daemon's canonical path); Go 3 and 4 do not differ when the file comes
// from ConfigPath and no annotation is given.
func (in *Installer) resolveShim(ctx context.Context, s *Shim) (*config.Resolved, error) {
	kind := config.DelegateGo4
	if strings.HasPrefix(s.Delegate, filepath.Join(in.opt.KataPrefix, "runtime-rs")+"/") {
		kind = config.DelegateRuntimeRS
	}
	src := config.Sources{Root: in.opt.HostRoot, Delegate: kind, RuntimeOptions: config.RuntimeOptions{ConfigPath: s.ConfigFile}}
	r, err := config.Resolve(ctx, src)
	if err != nil {
		return nil, err
	}
	if pinned := r.Guard.DelegateKind; pinned != "" && pinned != config.DelegateAuto && pinned != kind {
		src.Delegate = pinned
		return config.Resolve(ctx, src)
	}
	return r, nil
}

// decide is policy.Decide for a sandbox of the shim, inspecting the kernel
// even where the policy would not, for the label.
func (in *Installer) decide(ctx context.Context, r *config.Resolved) (*plan.Plan, error) {
	return policy.Decide(ctx, policy.Input{Resolved: r, SandboxID: "kata-submount-guard-deploy", ContainerType: policy.PodSandbox,
		Inspector: hostInspector{in}, InspectAlways: true})
}

// evaluate fills r.Verdict, r.Protected and r.Reason from policy.Decide, the
// decision our shim makes at sandbox creation, on the shim's configuration.
// Kata boots one of the file's hypervisor tables, at random when there are
// several, after our shim decided on all of them: a sandbox is safe when
// that decision refuses it, or when the table Kata boots goes on with no
// Unprotected. So the shim is protected iff the whole decision refuses, or
// each table's own decision (Decide on that table alone) is not Unprotected.
// The label's verdict is the worst of the tables' kernels.
func (in *Installer) evaluate(ctx context.Context, s *Shim, r *ShimReport) {
	r.Verdict = string(verdict.Unknown)
	res, err := in.resolveShim(ctx, s)
	if err != nil {
		r.Reason = fmt.Sprintf("configuration: %v", err)
		return
	}
	if !r.Guarded {
		// containerd runs Kata's shim alone (or ours without what it
		// needs): nothing refuses or protects, which is the decision of our
		// guard switched off.
		res.Guard.OnVulnerable, res.Guard.OnUnknown, res.Guard.VirtiofsProtection = config.PolicyOff, config.PolicyOff, protection.None
	}
	whole, err := in.decide(ctx, res)
	if err != nil {
		r.Reason = fmt.Sprintf("guest kernel check: %v", err)
		return
	}
	refused := whole.Action == plan.Refuse
	protected := refused || !whole.Unprotected
	var worst verdict.Verdict // "": no kernel judged
	var why []string
	for _, h := range res.Hypervisors {
		one := *res
		one.HypervisorName, one.Hypervisor, one.Hypervisors = h.Name, h.Config, []config.HypervisorChoice{h}
		p, err := in.decide(ctx, &one)
		if err != nil {
			r.Verdict, r.Reason = string(verdict.Unknown), fmt.Sprintf("[hypervisor.%s] guest kernel check: %v", h.Name, err)
			r.Protected = false
			return
		}
		v, ok := p.Kernel.Verdict, p.KernelInspected
		if !ok && h.Config.Kernel != "" {
			// No virtio-fs share: Decide did not need the kernel, the
			// label still tells its fix status.
			v, ok = in.kernelVerdict(ctx, h.Config.Kernel, res.Guard.FixedReleases), true
		}
		if ok && (worst == "" || v.Severity() > worst.Severity()) {
			worst = v
		}
		if refused || !p.Unprotected {
			continue
		}
		protected = false
		if r.Guarded {
			why = append(why, fmt.Sprintf("[hypervisor.%s] %s", h.Name, p.Reason))
		} else {
			why = append(why, fmt.Sprintf("[hypervisor.%s] guest kernel %s is %s and kata-submount-guard does not guard this handler", h.Name, p.Kernel.Path, p.Kernel.Verdict))
		}
	}
	if worst != "" {
		r.Verdict = string(worst)
	}
	r.Protected = protected
	if !protected && len(why) == 0 {
		why = append(why, whole.Reason)
	}
	r.Reason = strings.Join(why, "; ")
}

// kernelVerdict inspects one kernel through the same memo as Decide.
func (in *Installer) kernelVerdict(ctx context.Context, kernel string, fixed []string) verdict.Verdict {
	rep, err := hostInspector{in}.Inspect(ctx, kernel, verdict.Options{FixedReleases: fixed})
	if err != nil || rep == nil {
		return verdict.Unknown
	}
	return rep.Verdict
}

// hostInspector is Decide's Inspector for the host's kernels: the paths it
// is given are host paths (config.Sources.Root resolved them), read under
// HOST_ROOT. It remembers each verdict by image, size, mtime and
// fixed_releases, so that a reconcile every few seconds does not re-read
// kernels; the shim's own cache under state_dir is the host's and is
// neither read nor written from here.
type hostInspector struct{ in *Installer }

func (h hostInspector) Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	opts.CacheDir = ""
	abs := h.in.host.abs(path)
	key := fmt.Sprint(path, opts.FixedReleases)
	if st, err := os.Stat(abs); err == nil {
		key += fmt.Sprint(st.Size(), st.ModTime().UnixNano())
	}
	if rep, ok := h.in.verdicts[key]; ok {
		return &rep, nil
	}
	rep, err := guestkernel.Inspect(ctx, abs, opts)
	if rep == nil {
		return nil, err
	}
	out := *rep
	out.Path = path // the host's path, as the shim's plan names it
	if err == nil {
		h.in.verdicts[key] = out
	}
	return &out, err
}
