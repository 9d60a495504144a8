package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// setup writes a configuration with one virtio-fs qemu table and returns its
// path; daemon names the virtio_fs_daemon ("" = a kata-virtiofsd in dir).
func setup(t *testing.T, kernel, guard, daemon string) string {
	t.Helper()
	dir := t.TempDir()
	if daemon == "" {
		daemon = filepath.Join(dir, "bin", ourVirtiofsd)
		require.NoError(t, os.MkdirAll(filepath.Dir(daemon), 0o755))
		require.NoError(t, os.WriteFile(daemon, nil, 0o755))
	}
	p := filepath.Join(dir, "configuration.toml")
	body := fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\nshared_fs = \"virtio-fs\"\nvirtio_fs_daemon = %q\n\n[submount_guard]\nstate_dir = %q\n%s\n",
		kernel, daemon, filepath.Join(dir, "state"), guard)
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func resolve(t *testing.T, path string) *config.Resolved {
	t.Helper()
	r, err := config.Resolve(context.Background(), config.Sources{ExplicitPath: path})
	require.NoError(t, err)
	return r
}

// canned returns an Inspector that reports verdict for every kernel and
// counts its calls.
func canned(v verdict.Verdict, calls *int) Inspector {
	return InspectorFunc(func(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
		*calls++
		return &verdict.Report{Path: path, Release: "6.1.69", Version: "6.1.69", Verdict: v, Evidence: verdict.EvidenceVersion, Reason: "canned"}, nil
	})
}

// TestPolicyMatrix runs every policy combination against every verdict the
// inspector can give. The expected outcome is the README's table:
// fixed/unaffected always allow with no protection; vulnerable and unknown
// follow on_vulnerable / on_unknown (refuse, warn, off=allow) and, unless
// refused, get virtiofs_protection.
func TestPolicyMatrix(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	policyAction := map[config.Policy]plan.Action{config.PolicyRefuse: plan.Refuse, config.PolicyWarn: plan.Warn, config.PolicyOff: plan.Allow}
	policies := []config.Policy{config.PolicyRefuse, config.PolicyWarn, config.PolicyOff}
	verdicts := []verdict.Verdict{verdict.Fixed, verdict.Unaffected, verdict.Vulnerable, verdict.Unknown}
	for _, onVuln := range policies {
		for _, onUnk := range policies {
			for _, prot := range []protection.Protection{protection.Recover, protection.NoSubmounts, protection.None} {
				guard := fmt.Sprintf("on_vulnerable = %q\non_unknown = %q\nvirtiofs_protection = %q", onVuln, onUnk, prot)
				r := resolve(t, setup(t, kernel, guard, ""))
				for _, v := range verdicts {
					name := fmt.Sprintf("vuln=%s/unk=%s/prot=%s/%s", onVuln, onUnk, prot, v)
					t.Run(name, func(t *testing.T) {
						calls := 0
						p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", ContainerType: PodSandbox, Inspector: canned(v, &calls)})
						require.NoError(t, err)
						wantAction, wantProt := plan.Allow, protection.None
						switch v {
						case verdict.Vulnerable:
							wantAction = policyAction[onVuln]
						case verdict.Unknown:
							wantAction = policyAction[onUnk]
						}
						if (v == verdict.Vulnerable || v == verdict.Unknown) && wantAction != plan.Refuse {
							wantProt = prot
						}
						guardOff := onVuln == config.PolicyOff && onUnk == config.PolicyOff && prot == protection.None
						if guardOff {
							require.Equal(t, 0, calls, "a guard that is off must not inspect")
							require.False(t, p.KernelInspected)
							require.Equal(t, plan.Allow, p.Action)
							require.Equal(t, protection.None, p.Protection)
							require.Contains(t, p.Reason, "submount guard is off")
							return
						}
						require.Equal(t, 1, calls)
						require.True(t, p.KernelInspected)
						require.Equal(t, wantAction, p.Action)
						require.Equal(t, wantProt, p.Protection)
						require.Equal(t, v, p.Kernel.Verdict)
						require.Equal(t, "sb", p.SandboxID)
						require.Equal(t, r.Path, p.ConfigPath)
						require.Equal(t, "flag", p.ConfigSource)
						require.Equal(t, "qemu", p.Hypervisor)
						require.NotEmpty(t, p.Reason)
					})
				}
			}
		}
	}
}

func TestDecideReasons(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	cases := []struct {
		name    string
		guard   string
		daemon  string
		verdict verdict.Verdict
		action  plan.Action
		prot    protection.Protection
		reason  string
		// unprotected: "" (protected, or no protection needed),
		// "chosen" (virtiofs_protection = none) or "unavailable".
		unprotected string
	}{
		{"fixed", "", "", verdict.Fixed, plan.Allow, protection.None,
			"guest kernel " + kernel + " (6.1.69) carries the FUSE submount fix (Linux c4d361f66ac9) (evidence: version)", ""},
		{"vulnerable refused", `on_vulnerable = "refuse"`, "", verdict.Vulnerable, plan.Refuse, protection.None,
			"guest kernel " + kernel + " (6.1.69) lacks the FUSE submount fix (Linux c4d361f66ac9; fixed in 6.7, 6.6.8, 6.1.70, 5.15.146) (evidence: version); on_vulnerable = refuse: sandbox creation refused. Boot a fixed kernel, or set [submount_guard] on_vulnerable = \"warn\" in CONFIG", ""},
		{"vulnerable warned and protected", "", "", verdict.Vulnerable, plan.Warn, protection.Recover,
			"guest kernel " + kernel + " (6.1.69) lacks the FUSE submount fix (Linux c4d361f66ac9; fixed in 6.7, 6.6.8, 6.1.70, 5.15.146) (evidence: version); on_vulnerable = warn; protection recover: kata-virtiofsd serves the share itself and recovers submount roots the guest forgets", ""},
		{"vulnerable protected by no-submounts", `virtiofs_protection = "no-submounts"`, "", verdict.Vulnerable, plan.Warn, protection.NoSubmounts,
			"; on_vulnerable = warn; protection no-submounts: virtiofsd will not announce submounts", ""},
		{"protection impossible with upstream daemon", "", "/opt/kata/libexec/virtiofsd", verdict.Vulnerable, plan.Warn, protection.None,
			"; unprotected: virtiofs_protection = recover cannot be applied: virtio_fs_daemon /opt/kata/libexec/virtiofsd is not kata-virtiofsd; set virtio_fs_daemon (and valid_virtio_fs_daemon_paths) of [hypervisor.qemu] to kata-virtiofsd's path in CONFIG", "unavailable"},
		{"unknown refused", `on_unknown = "refuse"`, "", verdict.Unknown, plan.Refuse, protection.None,
			"fix status of guest kernel " + kernel + " (6.1.69) cannot be determined (canned); on_unknown = refuse: sandbox creation refused. If this kernel carries the fix, add \"6.1.69\" to [submount_guard] fixed_releases in CONFIG", ""},
		{"vulnerable warned and recovered", `virtiofs_protection = "recover"`, "", verdict.Vulnerable, plan.Warn, protection.Recover,
			"; on_vulnerable = warn; protection recover: kata-virtiofsd serves the share itself and recovers submount roots the guest forgets", ""},
		{"recover impossible with upstream daemon", `virtiofs_protection = "recover"`, "/opt/kata/libexec/virtiofsd", verdict.Unknown, plan.Warn, protection.None,
			"; unprotected: virtiofs_protection = recover cannot be applied: virtio_fs_daemon /opt/kata/libexec/virtiofsd is not kata-virtiofsd; set virtio_fs_daemon (and valid_virtio_fs_daemon_paths) of [hypervisor.qemu] to kata-virtiofsd's path in CONFIG", "unavailable"},
		{"protection none", `virtiofs_protection = "none"`, "", verdict.Unknown, plan.Warn, protection.None,
			"; unprotected: virtiofs_protection = none: virtiofsd runs as Kata configured it", "chosen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := setup(t, kernel, tc.guard, tc.daemon)
			r := resolve(t, path)
			calls := 0
			p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", Inspector: canned(tc.verdict, &calls)})
			require.NoError(t, err)
			require.Equal(t, tc.action, p.Action)
			require.Equal(t, tc.prot, p.Protection)
			require.Equal(t, tc.unprotected != "", p.Unprotected, "unprotected")
			require.Equal(t, tc.unprotected == "unavailable", p.ProtectionUnavailable, "protection unavailable")
			if p.Unprotected {
				require.True(t, strings.HasSuffix(p.Reason, "; unprotected: "+p.UnprotectedReason), p.Reason)
			}
			want := strings.ReplaceAll(tc.reason, "CONFIG", path)
			if strings.HasPrefix(want, ";") {
				require.True(t, strings.HasSuffix(p.Reason, want), p.Reason)
			} else {
				require.Equal(t, want, p.Reason)
			}
		})
	}
}

func TestDecideInspectionFailureIsUnknown(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	r := resolve(t, setup(t, kernel, `on_unknown = "refuse"`, ""))
	for name, insp := range map[string]Inspector{
		"error": InspectorFunc(func(context.Context, string, verdict.Options) (*verdict.Report, error) {
			return nil, fmt.Errorf("cannot read: %w", errdefs.ErrInvalidArgument)
		}),
		"report with error claiming fixed": InspectorFunc(func(_ context.Context, p string, _ verdict.Options) (*verdict.Report, error) {
			return &verdict.Report{Path: p, Verdict: verdict.Fixed}, fmt.Errorf("half read")
		}),
		"no report": InspectorFunc(func(context.Context, string, verdict.Options) (*verdict.Report, error) { return nil, nil }),
		"made-up verdict": InspectorFunc(func(_ context.Context, p string, _ verdict.Options) (*verdict.Report, error) {
			return &verdict.Report{Path: p, Verdict: "probably-fine"}, nil
		}),
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", Inspector: insp})
			require.NoError(t, err)
			require.Equal(t, verdict.Unknown, p.Kernel.Verdict, "never a false fixed")
			require.Equal(t, plan.Refuse, p.Action)
		})
	}
}

// TestDecideInspectorUnavailable: an inspector that cannot inspect at all
// fails the decision whatever the policy, since a missing inspector judged
// "unknown" would let on_unknown = warn start a vulnerable kernel that
// on_vulnerable = refuse must stop.
func TestDecideInspectorUnavailable(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	missing := &InspectorError{Err: fmt.Errorf("the inspector /opt/ksg/bin/kata-runtime does not exist; install it: %w", errdefs.ErrFailedPrecondition)}
	for _, guard := range []string{
		"on_vulnerable = \"refuse\"",
		"on_vulnerable = \"refuse\"\non_unknown = \"off\"",
		"on_unknown = \"refuse\"",
	} {
		t.Run(strings.ReplaceAll(guard, "\n", ", "), func(t *testing.T) {
			calls := 0
			insp := InspectorFunc(func(context.Context, string, verdict.Options) (*verdict.Report, error) {
				calls++
				return nil, fmt.Errorf("kernel %s: %w", kernel, missing)
			})
			p, err := Decide(context.Background(), Input{Resolved: resolve(t, setup(t, kernel, guard, "")), SandboxID: "sb", Inspector: insp})
			require.Nil(t, p)
			require.EqualError(t, err, "kernel "+kernel+": the inspector /opt/ksg/bin/kata-runtime does not exist; install it: failed precondition")
			var ie *InspectorError
			require.ErrorAs(t, err, &ie)
			require.True(t, errdefs.IsFailedPrecondition(err))
			require.Equal(t, 1, calls)
		})
	}
}

func TestDecideNoVirtioFS(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	path := filepath.Join(dir, "c.toml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\nshared_fs = \"virtio-9p\"\n[submount_guard]\non_unknown = \"refuse\"\n", kernel)), 0o644))
	calls := 0
	p, err := Decide(context.Background(), Input{Resolved: resolve(t, path), SandboxID: "sb", Inspector: canned(verdict.Vulnerable, &calls)})
	require.NoError(t, err)
	require.Equal(t, 0, calls)
	require.False(t, p.KernelInspected)
	require.Equal(t, plan.Allow, p.Action)
	require.Equal(t, protection.None, p.Protection)
	require.Equal(t, "[hypervisor.qemu] shared_fs = virtio-9p: the guest mounts no virtio-fs share, so the FUSE submount bug cannot occur", p.Reason)
}

func TestDecideSeveralTablesTakesStrictest(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "vmlinuz-good")
	bad := filepath.Join(dir, "vmlinuz-bad")
	for _, k := range []string{good, bad} {
		require.NoError(t, os.WriteFile(k, []byte("x"), 0o644))
	}
	path := filepath.Join(dir, "c.toml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`[hypervisor.clh]
kernel = %q
virtio_fs_daemon = "/v"
[hypervisor.qemu]
kernel = %q
virtio_fs_daemon = "/v"
[submount_guard]
on_vulnerable = "refuse"
`, good, bad)), 0o644))
	insp := InspectorFunc(func(_ context.Context, p string, _ verdict.Options) (*verdict.Report, error) {
		v := verdict.Fixed
		if p == bad {
			v = verdict.Vulnerable
		}
		return &verdict.Report{Path: p, Verdict: v}, nil
	})
	p, err := Decide(context.Background(), Input{Resolved: resolve(t, path), SandboxID: "sb", Inspector: insp})
	require.NoError(t, err)
	require.Equal(t, plan.Refuse, p.Action)
	require.Equal(t, "qemu", p.Hypervisor)
	require.Equal(t, bad, p.Kernel.Path)
	require.Equal(t, []string{"clh", "qemu"}, p.HypervisorCandidates)
}

func TestDecideGuardOffInspectAlways(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	r := resolve(t, setup(t, kernel, "on_vulnerable = \"off\"\non_unknown = \"off\"\nvirtiofs_protection = \"none\"", ""))
	calls := 0
	p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", Inspector: canned(verdict.Vulnerable, &calls), InspectAlways: true})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	require.Equal(t, verdict.Vulnerable, p.Kernel.Verdict)
	require.Equal(t, plan.Allow, p.Action)
	require.Equal(t, protection.None, p.Protection)
}

func TestDecideRejects(t *testing.T) {
	_, err := Decide(context.Background(), Input{})
	require.True(t, errdefs.IsInvalidArgument(err))
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	calls := 0
	_, err = Decide(context.Background(), Input{Resolved: resolve(t, setup(t, kernel, "", "")), SandboxID: "c2", ContainerType: PodContainer, Inspector: canned(verdict.Fixed, &calls)})
	require.True(t, errdefs.IsInvalidArgument(err))
	// Without an inspector there is no decision, never a guess.
	_, err = Decide(context.Background(), Input{Resolved: resolve(t, setup(t, kernel, "", "")), SandboxID: "sb"})
	require.ErrorContains(t, err, "no guest kernel inspector")
	require.True(t, errdefs.IsInvalidArgument(err))
	require.Zero(t, calls)
}

// TestDecideStepsInOrder: the guest-kernel step runs before the protection
// step, which reads its verdict and appends to its reason; the shared-fs
// step ending the decision early is TestDecideNoVirtioFS.
func TestDecideStepsInOrder(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("x"), 0o644))
	r := resolve(t, setup(t, kernel, `virtiofs_protection = "recover"`, ""))
	calls := 0
	p, err := Decide(context.Background(), Input{Resolved: r, SandboxID: "sb", Inspector: canned(verdict.Vulnerable, &calls)})
	require.NoError(t, err)
	require.Equal(t, 1, calls)
	require.Equal(t, plan.Warn, p.Action)
	require.Equal(t, protection.Recover, p.Protection)
	require.True(t, strings.HasPrefix(p.Reason, "guest kernel "+kernel), p.Reason)
	require.True(t, strings.HasSuffix(p.Reason, "; protection recover: kata-virtiofsd serves the share itself and recovers submount roots the guest forgets"), p.Reason)
}
