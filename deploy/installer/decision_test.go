package installer

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

const (
	kataVirtiofsd = "/opt/kata/libexec/virtiofsd"
	garbageKernel = "/opt/kata/share/kata-containers/vmlinuz-garbage"
	fixedKernel   = "/opt/kata/share/kata-containers/vmlinuz-6.18.35"
	vulnKernel    = "/opt/kata/share/kata-containers/vmlinuz-6.1.38"
)

// clhTable is a second hypervisor table served by Kata's virtiofsd, in a
// drop-in read before ours (which then serves it with kata-virtiofsd).
func clhTable(kernel string) string {
	return "[hypervisor.clh]\nkernel = \"" + kernel + "\"\nshared_fs = \"virtio-fs\"\nvirtio_fs_daemon = \"" + kataVirtiofsd + "\"\n"
}

// TestLabelIsPoliciesDecision: for each configuration of a guarded node,
// the shim's labels are what the shim's own decision (policy.Decide on the
// same merged file) says: the worst kernel of the tables Kata may boot, and
// protected iff the decision refuses or no table goes on Unprotected.
func TestLabelIsPoliciesDecision(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kernel string // the Go qemu shim's kernel release
		rs     bool   // the runtime-rs shim's labels, not the Go one's
		// dropIns are written beside the shim's configuration: before
		// ours (50-) or after it, with the operator's last word (95-).
		dropIns       map[string]string
		links         map[string]string // host path → link target
		wantVerdict   string
		wantProtected bool
	}{
		{name: "fixed kernel", kernel: "6.18.35", wantVerdict: "fixed", wantProtected: true},
		{name: "vulnerable, warn, recover by our daemon", kernel: "6.1.38", wantVerdict: "vulnerable", wantProtected: true},
		{name: "vulnerable, warn, Kata's daemon", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[hypervisor.qemu]\nvirtio_fs_daemon = \"" + kataVirtiofsd + "\"\n"},
			wantVerdict: "vulnerable", wantProtected: false},
		{name: "vulnerable, refuse", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[submount_guard]\non_vulnerable = \"refuse\"\nvirtiofs_protection = \"none\"\n"},
			wantVerdict: "vulnerable", wantProtected: true},
		{name: "unknown, off, recover", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[hypervisor.qemu]\nkernel = \"" + garbageKernel + "\"\n[submount_guard]\non_unknown = \"off\"\n"},
			wantVerdict: "unknown", wantProtected: true},
		{name: "unknown, off, no protection", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[hypervisor.qemu]\nkernel = \"" + garbageKernel + "\"\n[submount_guard]\non_unknown = \"off\"\nvirtiofs_protection = \"none\"\n"},
			wantVerdict: "unknown", wantProtected: false},
		{name: "virtiofs_protection = none", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[submount_guard]\nvirtiofs_protection = \"none\"\n"},
			wantVerdict: "vulnerable", wantProtected: false},
		{name: "shared_fs = virtio-9p", kernel: "6.1.38",
			dropIns:     map[string]string{"95-operator.toml": "[hypervisor.qemu]\nshared_fs = \"virtio-9p\"\n"},
			wantVerdict: "vulnerable", wantProtected: true},
		{name: "two tables: one refused, so every sandbox is, though the other would go on unprotected", kernel: "6.1.38",
			dropIns: map[string]string{
				"50-clh.toml":      clhTable(garbageKernel),
				"95-operator.toml": "[submount_guard]\non_unknown = \"refuse\"\nvirtiofs_protection = \"none\"\n",
			},
			wantVerdict: "vulnerable", wantProtected: true},
		{name: "two tables: one protected, one on Kata's daemon", kernel: "6.1.38",
			dropIns: map[string]string{
				"50-clh.toml":      clhTable(garbageKernel),
				"95-operator.toml": "[hypervisor.clh]\nvirtio_fs_daemon = \"" + kataVirtiofsd + "\"\n",
			},
			wantVerdict: "vulnerable", wantProtected: false},
		{name: "two tables, both protected", kernel: "6.18.35",
			dropIns:     map[string]string{"50-clh.toml": clhTable(vulnKernel)},
			wantVerdict: "vulnerable", wantProtected: true},
		{name: "vulnerable, recover by our daemon through a host symlink", kernel: "6.1.38",
			dropIns: map[string]string{"95-operator.toml": "[hypervisor.qemu]\nvirtio_fs_daemon = \"/usr/libexec/virtiofsd\"\n" +
				"valid_virtio_fs_daemon_paths = [\"/usr/libexec/virtiofsd\"]\n"},
			links:       map[string]string{"/usr/libexec/virtiofsd": oursVirtiofsd},
			wantVerdict: "vulnerable", wantProtected: true},
		{name: "runtime-rs boots hypervisor_name's table only", kernel: "6.1.38", rs: true,
			dropIns: map[string]string{
				"50-clh.toml":      clhTable(vulnKernel),
				"95-operator.toml": "[hypervisor.clh]\nvirtio_fs_daemon = \"" + kataVirtiofsd + "\"\n",
			},
			wantVerdict: "fixed", wantProtected: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.kernel, "6.18.35")
			f.write(garbageKernel, "not a kernel")
			f.write(fixedKernel, string(fakeBzImage(t, "6.18.35")))
			f.write(vulnKernel, string(fakeBzImage(t, "6.1.38")))
			dir, shim := qemuDir, 0
			if tc.rs {
				dir, shim = rsDir, 1
			}
			for name, content := range tc.dropIns {
				f.write(dir+"/config.d/"+name, content)
			}
			for at, target := range tc.links {
				require.NoError(t, os.MkdirAll(f.abs("/usr/libexec"), 0o755))
				require.NoError(t, os.Symlink(target, f.abs(at)))
			}
			reports, err := f.installer().Apply(context.Background())
			require.NoError(t, err)
			r := reports[shim]
			require.True(t, r.Guarded, r.Shim)

			kind := config.DelegateGo4
			if tc.rs {
				kind = config.DelegateRuntimeRS
			}
			decidedVerdict, decidedProtected := decideFor(t, f, r.ConfigFile, kind)
			assert.Equal(t, tc.wantVerdict, decidedVerdict, "policy.Decide's verdict (the case's expectation is wrong)")
			assert.Equal(t, tc.wantProtected, decidedProtected, "policy.Decide's protection (the case's expectation is wrong)")

			assert.Equal(t, tc.wantVerdict, r.Verdict, r.Reason)
			assert.Equal(t, tc.wantProtected, r.Protected, r.Reason)
			labels := f.api.get()
			assert.Equal(t, tc.wantVerdict, labels[LabelPrefix+r.Shim])
			assert.Equal(t, map[bool]string{true: "true", false: "false"}[tc.wantProtected], labels[LabelPrefix+r.Shim+".protected"])
			assert.Contains(t, f.read("/etc/kubernetes/node-feature-discovery/features.d/kata-submount-guard"),
				LabelPrefix+r.Shim+".protected="+map[bool]string{true: "true", false: "false"}[tc.wantProtected]+"\n")
			if !tc.wantProtected {
				assert.Contains(t, r.Reason, "unprotected", "the reason says why")
			}
			assert.NotContains(t, r.Reason, f.root, "the reason names host paths")
		})
	}
}

// decideFor is what the shim decides for the host's file at configFile, as
// the test reads it: policy.Decide on the whole configuration (does it
// refuse?) and on each table Kata may boot (does it go on Unprotected?).
func decideFor(t *testing.T, f *fixture, configFile string, kind config.DelegateKind) (string, bool) {
	t.Helper()
	ctx := context.Background()
	r, err := config.Resolve(ctx, config.Sources{Root: f.root, Delegate: kind, RuntimeOptions: config.RuntimeOptions{ConfigPath: configFile}})
	require.NoError(t, err)
	insp := policy.InspectorFunc(func(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
		return guestkernel.Inspect(ctx, f.abs(path), verdict.Options{FixedReleases: opts.FixedReleases})
	})
	decide := func(r *config.Resolved) *plan.Plan {
		p, err := policy.Decide(ctx, policy.Input{Resolved: r, ContainerType: policy.PodSandbox, Inspector: insp, InspectAlways: true})
		require.NoError(t, err)
		return p
	}
	whole := decide(r)
	protected := whole.Action == plan.Refuse || !whole.Unprotected
	worst := ""
	for _, h := range r.Hypervisors {
		one := *r
		one.HypervisorName, one.Hypervisor, one.Hypervisors = h.Name, h.Config, []config.HypervisorChoice{h}
		p := decide(&one)
		v := p.Kernel.Verdict
		if !p.KernelInspected {
			rep, err := insp(ctx, h.Config.Kernel, verdict.Options{FixedReleases: r.Guard.FixedReleases})
			require.NoError(t, err)
			v = rep.Verdict
		}
		if worst == "" || v.Severity() > verdict.Verdict(worst).Severity() {
			worst = string(v)
		}
		if whole.Action != plan.Refuse && p.Unprotected {
			protected = false
		}
	}
	return worst, protected
}

// TestKernelVerdictRemembered: a reconcile pass runs Decide once for the
// shim and once per table; each kernel is read once per version of the
// file (size and mtime), not on every pass.
func TestKernelVerdictRemembered(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	in := f.installer()
	ctx := context.Background()
	reports, err := in.Apply(ctx)
	require.NoError(t, err)
	require.Equal(t, "vulnerable", reports[0].Verdict)

	kernel := f.abs(vulnKernel)
	st, err := os.Stat(kernel)
	require.NoError(t, err)
	// The same size and mtime, other bytes: the pass trusts what it read.
	require.NoError(t, os.WriteFile(kernel, make([]byte, st.Size()), 0o644))
	require.NoError(t, os.Chtimes(kernel, st.ModTime(), st.ModTime()))
	reports, err = in.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "vulnerable", reports[0].Verdict, "remembered")

	// A new mtime is a new kernel: read again.
	later := st.ModTime().Add(time.Second)
	require.NoError(t, os.Chtimes(kernel, later, later))
	reports, err = in.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, "unknown", reports[0].Verdict, "read again")
}
