package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// TestDecideRealKernels decides on the kernels test/kernels builds, through
// the real verdict.Inspect, for both image formats.
func TestDecideRealKernels(t *testing.T) {
	dir := testutil.GuestKernelsDir(t)
	releases := testutil.GuestKernelReleases(t, dir)
	garbage := filepath.Join(t.TempDir(), "not-a-kernel")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not a kernel image\n"), 0o644))
	cases := []struct {
		name    string
		kernel  string
		guard   string
		verdict verdict.Verdict
		action  plan.Action
		prot    protection.Protection
	}{
		{"fixed bzImage", filepath.Join(dir, "fixed/bzImage"), `on_vulnerable = "refuse"`, verdict.Fixed, plan.Allow, protection.None},
		{"fixed vmlinux", filepath.Join(dir, "fixed/vmlinux"), `on_vulnerable = "refuse"`, verdict.Fixed, plan.Allow, protection.None},
		{"vulnerable bzImage refused", filepath.Join(dir, "vulnerable/bzImage"), `on_vulnerable = "refuse"`, verdict.Vulnerable, plan.Refuse, protection.None},
		{"vulnerable vmlinux warned", filepath.Join(dir, "vulnerable/vmlinux"), ``, verdict.Vulnerable, plan.Warn, protection.Recover},
		{"vulnerable off still protected", filepath.Join(dir, "vulnerable/vmlinux"), `on_vulnerable = "off"`, verdict.Vulnerable, plan.Allow, protection.Recover},
		// BTF outranks a version string that lies either way.
		{"lying-fixed is vulnerable", filepath.Join(dir, "lying-fixed/vmlinux"), `on_vulnerable = "refuse"`, verdict.Vulnerable, plan.Refuse, protection.None},
		{"lying-vulnerable is fixed", filepath.Join(dir, "lying-vulnerable/vmlinux"), `on_vulnerable = "refuse"`, verdict.Fixed, plan.Allow, protection.None},
		// BTF outranks fixed_releases; without BTF the operator's word does.
		{"fixed_releases cannot beat BTF", filepath.Join(dir, "vulnerable/vmlinux"),
			fmt.Sprintf("on_vulnerable = \"refuse\"\nfixed_releases = [%q]", releases["vulnerable"]), verdict.Vulnerable, plan.Refuse, protection.None},
		{"fixed_releases beats the version", filepath.Join(dir, "vulnerable-nobtf/vmlinux"),
			fmt.Sprintf("on_vulnerable = \"refuse\"\nfixed_releases = [%q]", releases["vulnerable-nobtf"]), verdict.Fixed, plan.Allow, protection.None},
		{"version alone", filepath.Join(dir, "vulnerable-nobtf/vmlinux"), `on_vulnerable = "refuse"`, verdict.Vulnerable, plan.Refuse, protection.None},
		{"not a kernel is unknown", garbage, `on_unknown = "refuse"`, verdict.Unknown, plan.Refuse, protection.None},
		{"not a kernel warned", garbage, ``, verdict.Unknown, plan.Warn, protection.Recover},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := resolve(t, setup(t, tc.kernel, tc.guard, ""))
			p, err := Decide(context.Background(), Input{Inspector: InspectorFunc(guestkernel.Inspect), Resolved: r, SandboxID: "sb", ContainerType: PodSandbox})
			require.NoError(t, err)
			require.Equal(t, tc.verdict, p.Kernel.Verdict, p.Reason)
			require.Equal(t, tc.action, p.Action, p.Reason)
			require.Equal(t, tc.prot, p.Protection, p.Reason)
			require.Equal(t, tc.kernel, p.Kernel.Path)
			if tc.verdict != verdict.Unknown {
				require.NotEmpty(t, p.Kernel.Release)
			}
			// The plan the shim would write round-trips.
			require.NoError(t, plan.Write(r.Guard.StateDir, p))
			back, err := plan.Read(r.Guard.StateDir, "sb")
			require.NoError(t, err)
			require.Equal(t, p.Kernel, back.Kernel)
			require.Equal(t, p.Action, back.Action)
		})
	}
}

// TestPolicyMatrixRealKernels repeats the policy matrix with verdicts that
// come from real images instead of canned reports.
func TestPolicyMatrixRealKernels(t *testing.T) {
	dir := testutil.GuestKernelsDir(t)
	garbage := filepath.Join(t.TempDir(), "not-a-kernel")
	require.NoError(t, os.WriteFile(garbage, []byte("MZ but nothing else"), 0o644))
	images := map[verdict.Verdict]string{
		verdict.Fixed:      filepath.Join(dir, "fixed/vmlinux"),
		verdict.Vulnerable: filepath.Join(dir, "vulnerable/vmlinux"),
		verdict.Unknown:    garbage,
	}
	policyAction := map[config.Policy]plan.Action{config.PolicyRefuse: plan.Refuse, config.PolicyWarn: plan.Warn, config.PolicyOff: plan.Allow}
	policies := []config.Policy{config.PolicyRefuse, config.PolicyWarn, config.PolicyOff}
	for _, onVuln := range policies {
		for _, onUnk := range policies {
			for _, prot := range []protection.Protection{protection.NoSubmounts, protection.None} {
				for v, image := range images {
					t.Run(fmt.Sprintf("vuln=%s/unk=%s/prot=%s/%s", onVuln, onUnk, prot, v), func(t *testing.T) {
						guard := fmt.Sprintf("on_vulnerable = %q\non_unknown = %q\nvirtiofs_protection = %q", onVuln, onUnk, prot)
						r := resolve(t, setup(t, image, guard, ""))
						p, err := Decide(context.Background(), Input{Inspector: InspectorFunc(guestkernel.Inspect), Resolved: r, SandboxID: "sb", InspectAlways: true})
						require.NoError(t, err)
						require.Equal(t, v, p.Kernel.Verdict)
						want, wantProt := plan.Allow, protection.None
						switch v {
						case verdict.Vulnerable:
							want = policyAction[onVuln]
						case verdict.Unknown:
							want = policyAction[onUnk]
						}
						guardOff := onVuln == config.PolicyOff && onUnk == config.PolicyOff && prot == protection.None
						if v != verdict.Fixed && want != plan.Refuse && !guardOff {
							wantProt = prot
						}
						require.Equal(t, want, p.Action, p.Reason)
						require.Equal(t, wantProt, p.Protection, p.Reason)
					})
				}
			}
		}
	}
}

// TestDecideDebianKernels decides on Debian's own cloud kernels, which
// test/setup caches: bookworm's 6.1 carries the fix (distro tail version),
// bullseye's 5.10 never got it. Their FUSE is a module, so the evidence is
// the version string.
func TestDecideDebianKernels(t *testing.T) {
	bookworm := testutil.RequiresCacheFile(t, "debian-kernels/bookworm-cloud-amd64/vmlinuz")
	bullseye := testutil.RequiresCacheFile(t, "debian-kernels/bullseye-cloud-amd64/vmlinuz")
	for _, tc := range []struct {
		name    string
		kernel  string
		verdict verdict.Verdict
		action  plan.Action
	}{
		{"bookworm", bookworm, verdict.Fixed, plan.Allow},
		{"bullseye", bullseye, verdict.Vulnerable, plan.Refuse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := resolve(t, setup(t, tc.kernel, `on_vulnerable = "refuse"`, ""))
			p, err := Decide(context.Background(), Input{Inspector: InspectorFunc(guestkernel.Inspect), Resolved: r, SandboxID: "sb", ContainerType: SingleContainer})
			require.NoError(t, err)
			require.Equal(t, tc.verdict, p.Kernel.Verdict, p.Reason)
			require.Equal(t, verdict.EvidenceVersion, p.Kernel.Evidence)
			require.Equal(t, tc.action, p.Action)
			require.True(t, p.KernelInspected)
			// A second decision is served from state_dir/kernel-cache.
			entries, err := os.ReadDir(statedir.KernelCacheDir(r.Guard.StateDir))
			require.NoError(t, err)
			require.NotEmpty(t, entries)
			again, err := Decide(context.Background(), Input{Inspector: InspectorFunc(guestkernel.Inspect), Resolved: r, SandboxID: "sb"})
			require.NoError(t, err)
			require.Equal(t, p.Kernel.Verdict, again.Kernel.Verdict)
		})
	}
}

// BenchmarkDecideCached is the shim's per-sandbox cost once the kernel's
// inspection is cached: resolve the configuration and decide.
func BenchmarkDecideCached(b *testing.B) {
	kernel := testutil.RequiresCacheFile(b, "debian-kernels/bookworm-cloud-amd64/vmlinuz")
	dir := b.TempDir()
	daemon := filepath.Join(dir, ourVirtiofsd)
	require.NoError(b, os.WriteFile(daemon, nil, 0o755))
	path := filepath.Join(dir, "c.toml")
	require.NoError(b, os.WriteFile(path, []byte(fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\nvirtio_fs_daemon = %q\n[submount_guard]\nstate_dir = %q\n",
		kernel, daemon, filepath.Join(dir, "state"))), 0o644))
	ctx := context.Background()
	decide := func() {
		r, err := config.Resolve(ctx, config.Sources{ExplicitPath: path})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decide(ctx, Input{Inspector: InspectorFunc(guestkernel.Inspect), Resolved: r, SandboxID: "sb"}); err != nil {
			b.Fatal(err)
		}
	}
	decide() // fill the cache
	b.ReportAllocs()
	for b.Loop() {
		decide()
	}
}
