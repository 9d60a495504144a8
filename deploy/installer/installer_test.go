package installer

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	oursShim      = "/opt/kata-submount-guard/bin/containerd-shim-kata-v2"
	oursVirtiofsd = "/opt/kata-submount-guard/bin/kata-virtiofsd"
)

func TestApplyTakesOverKataDeploysHandlersInPlace(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	ctx := context.Background()

	reports, err := f.installer().Apply(ctx)
	require.NoError(t, err)

	// Only the two runtime_path values changed; every other byte is kata-deploy's.
	want := strings.NewReplacer(
		`runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"`, `runtime_path = "`+oursShim+`"`,
		`runtime_path = "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"`, `runtime_path = "`+oursShim+`"`,
	).Replace(kataDeployMain)
	assert.Equal(t, want, f.read("/etc/containerd/config.toml"))
	assert.Equal(t, 1, f.restarts, "containerd restarted once")

	for _, b := range Binaries {
		assert.Equal(t, "ours: "+b, f.read("/opt/kata-submount-guard/bin/"+b))
	}
	assert.Equal(t, `# Written by kata-submount-guard-deploy for containerd's kata-qemu handler: Kata's shim
# stays where kata-deploy put it and ours hands off to it. Its uninstall removes this file.
[submount_guard]
delegate_shim = "/opt/kata/bin/containerd-shim-kata-v2"
upstream_virtiofsd = "/opt/kata/libexec/virtiofsd"

[hypervisor.qemu]
virtio_fs_daemon = "`+oursVirtiofsd+`"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/virtiofsd", "`+oursVirtiofsd+`"]
`, f.read(qemuDir+"/config.d/90-submount-guard.toml"))
	assert.Contains(t, f.read(rsDir+"/config.d/90-submount-guard.toml"),
		`delegate_shim = "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"`)

	require.Len(t, reports, 2)
	for _, r := range reports {
		assert.True(t, r.Guarded, r.Shim)
		assert.True(t, r.Protected, "%s: %s", r.Shim, r.Reason)
	}
	assert.Equal(t, "vulnerable", reports[0].Verdict, "the Go shim's 6.1.38 kernel")
	assert.Equal(t, "fixed", reports[1].Verdict, "runtime-rs's 6.18.35 kernel (through an absolute symlink)")

	labels := map[string]string{
		"submount-guard.katacontainers.io/qemu":                      "vulnerable",
		"submount-guard.katacontainers.io/qemu.protected":            "true",
		"submount-guard.katacontainers.io/qemu-runtime-rs":           "fixed",
		"submount-guard.katacontainers.io/qemu-runtime-rs.protected": "true",
	}
	got := f.api.get()
	for k, v := range labels {
		assert.Equal(t, v, got[k], k)
	}
	assert.Equal(t, "node1", got["kubernetes.io/hostname"], "other labels untouched")
	assert.Equal(t, string(nfdContent(labels)), f.read("/etc/kubernetes/node-feature-discovery/features.d/kata-submount-guard"))

	// Applying again changes nothing and restarts nothing.
	before, patches := f.snapshot(), f.api.patches
	_, err = f.installer().Apply(ctx)
	require.NoError(t, err)
	assert.Equal(t, before, f.snapshot())
	assert.Equal(t, 1, f.restarts)
	assert.Equal(t, patches, f.api.patches)
}

func TestUninstallRestoresByteForByte(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture)
	}{
		{"containerd 1.x: kata-deploy's handlers in config.toml", func(*fixture) {}},
		{"containerd 2.x: kata-deploy's drop-in imported explicitly", func(f *fixture) {
			f.write("/etc/containerd/config.toml", "version = 3\nimports = [\"/opt/kata/containerd/config.d/kata-deploy.toml\"]\n\n[plugins]\n")
			f.write("/opt/kata/containerd/config.d/kata-deploy.toml", kataDeployDropIn)
		}},
		{"containerd 2.2: kata-deploy's drop-in in conf.d", func(f *fixture) {
			f.write("/etc/containerd/config.toml", "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n")
			f.write("/etc/containerd/conf.d/kata-deploy.toml", kataDeployDropIn)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "6.1.38", "6.18.35")
			tc.setup(f)
			before := f.snapshot()
			ctx := context.Background()

			_, err := f.installer().Apply(ctx)
			require.NoError(t, err)
			require.NotEqual(t, before, f.snapshot())

			require.NoError(t, f.installer().Uninstall(ctx))
			assert.Equal(t, before, f.snapshot())
			assert.Equal(t, 2, f.restarts, "restarted after install and after uninstall")
			for k := range f.api.get() {
				assert.False(t, strings.HasPrefix(k, LabelPrefix), "label %s left behind", k)
			}
		})
	}
}

func TestApplyByDropInWinsOverKataDeploys(t *testing.T) {
	for _, tc := range []struct {
		name, main, kataFile, ours, wantMain string
	}{
		{
			name:     "explicit import: ours appended after kata-deploy's",
			main:     "version = 3\nimports = [\"/opt/kata/containerd/config.d/kata-deploy.toml\"] # kata-deploy\n",
			kataFile: "/opt/kata/containerd/config.d/kata-deploy.toml",
			ours:     "/opt/kata-submount-guard/containerd/kata-submount-guard.toml",
			wantMain: "version = 3\nimports = [\"/opt/kata/containerd/config.d/kata-deploy.toml\", \"/opt/kata-submount-guard/containerd/kata-submount-guard.toml\"] # kata-deploy\n",
		},
		{
			name:     "conf.d glob: ours sorts after kata-deploy.toml",
			main:     "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			kataFile: "/etc/containerd/conf.d/kata-deploy.toml",
			ours:     "/etc/containerd/conf.d/kata-submount-guard.toml",
			wantMain: "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "6.1.38", "6.18.35")
			f.write("/etc/containerd/config.toml", tc.main)
			f.write(tc.kataFile, kataDeployDropIn)

			reports, err := f.installer().Apply(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tc.wantMain, f.read("/etc/containerd/config.toml"))
			assert.Equal(t, kataDeployDropIn, f.read(tc.kataFile), "kata-deploy's file untouched")
			assert.Contains(t, f.read(tc.ours), "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.kata-qemu]\nruntime_path = \""+oursShim+"\"\n")

			cfg, err := loadContainerd(f.installer().host, "/etc/containerd/config.toml")
			require.NoError(t, err)
			rts := cfg.runtimes("")
			require.Len(t, rts, 1)
			assert.Equal(t, oursShim, rts[0].RuntimePath, "containerd's merge order makes ours win")
			assert.Equal(t, "/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml", rts[0].ConfigPath, "kata-deploy's ConfigPath kept")
			require.Len(t, reports, 1)
			assert.True(t, reports[0].Guarded)
		})
	}
}

// kata-deploy's reinstall writes runtime_path back to its shim and deletes
// runtimes/<shim>/ before making it anew: the DaemonSet must re-apply, and
// Uninstall must then give back what kata-deploy wrote.
func TestReapplyAfterKataDeployReinstall(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	ctx := context.Background()
	pristine := f.snapshot()
	_, err := f.installer().Apply(ctx)
	require.NoError(t, err)

	// kata-deploy reinstalls (a newer one, with another comment).
	reinstalled := strings.Replace(kataDeployMain, "# Administrator's", "# Reinstalled. Administrator's", 1)
	f.write("/etc/containerd/config.toml", reinstalled)
	require.NoError(t, os.RemoveAll(f.abs(qemuDir)))
	f.write(qemuDir+"/configuration-qemu.toml", qemuConfig)
	f.write(qemuDir+"/config.d/10-installation-prefix.toml", "[runtime]\n")

	st, err := f.installer().Status(ctx)
	require.NoError(t, err)
	assert.False(t, st[0].Guarded, "kata-deploy undid the take-over")
	assert.False(t, st[0].Protected, "a vulnerable kernel without the guard is not protected")

	reports, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	for _, r := range reports {
		assert.True(t, r.Guarded, r.Shim)
	}
	assert.Contains(t, f.read("/etc/containerd/config.toml"), "# Reinstalled.")
	assert.NotContains(t, f.read("/etc/containerd/config.toml"), `"/opt/kata/bin/containerd-shim-kata-v2"`)
	assert.True(t, f.exists(qemuDir+"/config.d/90-submount-guard.toml"))
	assert.Equal(t, 2, f.restarts)
	assert.Equal(t, "true", f.api.get()[LabelPrefix+"qemu.protected"])

	require.NoError(t, f.installer().Uninstall(ctx))
	want := pristine
	want["/etc/containerd/config.toml"] = "-rw-r--r-- " + reinstalled
	assert.Equal(t, want, f.snapshot(), "what kata-deploy's reinstall wrote, and nothing of ours")
}

// An administrator's edit after ours means the bytes we saved are stale:
// Uninstall reverts our values only and keeps theirs.
func TestUninstallKeepsLaterEdits(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	ctx := context.Background()
	_, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	edited := f.read("/etc/containerd/config.toml") + "\n[debug]\nlevel = \"debug\"\n"
	f.write("/etc/containerd/config.toml", edited)

	require.NoError(t, f.installer().Uninstall(ctx))
	assert.Equal(t, kataDeployMain+"\n[debug]\nlevel = \"debug\"\n", f.read("/etc/containerd/config.toml"))
}

func TestProtectedLabel(t *testing.T) {
	for _, tc := range []struct {
		name          string
		kernel        string
		install       bool
		dropIn        string // an operator's extra drop-in for the qemu shim
		wantVerdict   string
		wantProtected bool
	}{
		{"fixed kernel, no guard", "6.18.35", false, "", "fixed", true},
		{"vulnerable kernel, no guard", "6.1.38", false, "", "vulnerable", false},
		{"vulnerable kernel, guarded, recover", "6.1.38", true, "", "vulnerable", true},
		{"vulnerable kernel, guarded, protection none", "6.1.38", true, "[submount_guard]\nvirtiofs_protection = \"none\"\n", "vulnerable", false},
		{"vulnerable kernel, guarded, refuse", "6.1.38", true, "[submount_guard]\non_vulnerable = \"refuse\"\nvirtiofs_protection = \"none\"\n", "vulnerable", true},
		{"vulnerable kernel, 9p", "6.1.38", false, "[hypervisor.qemu]\nshared_fs = \"virtio-9p\"\n", "vulnerable", true},
		{"vulnerable kernel vouched for by fixed_releases", "6.1.38", false, "[submount_guard]\nfixed_releases = [\"6.1.38\"]\n", "fixed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.kernel, "6.18.35")
			if tc.dropIn != "" {
				// 95 sorts after ours: the operator has the last word.
				f.write(qemuDir+"/config.d/95-operator.toml", tc.dropIn)
			}
			in := f.installer()
			var reports []ShimReport
			var err error
			if tc.install {
				reports, err = in.Apply(context.Background())
			} else {
				reports, err = in.Status(context.Background())
			}
			require.NoError(t, err)
			require.Equal(t, "qemu", reports[0].Shim)
			assert.Equal(t, tc.wantVerdict, reports[0].Verdict)
			assert.Equal(t, tc.wantProtected, reports[0].Protected, reports[0].Reason)
		})
	}
}

func TestShimsLimitsTakeOverNotLabels(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.1.38")
	f.opt.Shims = []string{"qemu"}
	reports, err := f.installer().Apply(context.Background())
	require.NoError(t, err)
	require.Len(t, reports, 2)
	assert.True(t, reports[0].Guarded)
	assert.False(t, reports[1].Guarded)
	assert.Contains(t, f.read("/etc/containerd/config.toml"), `runtime_path = "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"`)
	assert.False(t, f.exists(rsDir+"/config.d/90-submount-guard.toml"))
	assert.Equal(t, "false", f.api.get()[LabelPrefix+"qemu-runtime-rs.protected"])
}

func TestRunWaitsForKataDeploysLabel(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	f.opt.Interval = 20 * 1e6 // 20ms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.installer().Run(ctx) }()

	// Not before kata-deploy says Kata is installed.
	for i := 0; i < 5; i++ {
		_ = sleep(context.Background(), f.opt.Interval)
		require.False(t, f.exists("/opt/kata-submount-guard/bin/containerd-shim-kata-v2"))
	}
	f.api.set(KataRuntimeLabel, "true")
	require.Eventually(t, func() bool { return f.api.get()[LabelPrefix+"qemu.protected"] == "true" }, 5e9, 1e7)

	cancel()
	require.NoError(t, <-done)
	assert.True(t, f.exists("/opt/kata-submount-guard/bin/containerd-shim-kata-v2"), "SIGTERM leaves the node guarded")
}

// The install record lost (GUARD_PREFIX wiped): the handlers still run our
// shim, and both a re-apply and Uninstall find kata-deploy's shim again.
func TestLostStateStillUninstalls(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	ctx := context.Background()
	_, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(f.abs("/opt/kata-submount-guard")))

	reports, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	require.Len(t, reports, 2)
	assert.Equal(t, "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2", reports[1].Delegate)
	assert.True(t, reports[1].Guarded)

	require.NoError(t, os.RemoveAll(f.abs("/opt/kata-submount-guard")))
	require.NoError(t, f.installer().Uninstall(ctx))
	assert.Equal(t, kataDeployMain, f.read("/etc/containerd/config.toml"))
	assert.False(t, f.exists(rsDir+"/config.d/90-submount-guard.toml"))
}

func TestNoNFDDirectoryNoFeatureFile(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	require.NoError(t, os.RemoveAll(f.abs("/etc/kubernetes")))
	_, err := f.installer().Apply(context.Background())
	require.NoError(t, err)
	assert.False(t, f.exists("/etc/kubernetes"), "NFD's directory is NFD's to make")
	assert.Equal(t, "true", f.api.get()[LabelPrefix+"qemu.protected"], "the labels still go on")
}

// A binary replaced on the host (an administrator's copy, a damaged file)
// is put back by the next reconcile, even by an installer that has already
// checked it once.
func TestApplyPutsBackAChangedBinary(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	in := f.installer()
	_, err := in.Apply(context.Background())
	require.NoError(t, err)
	f.write("/opt/kata-submount-guard/bin/kata-virtiofsd", "someone else's")
	_, err = in.Apply(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "ours: kata-virtiofsd", f.read("/opt/kata-submount-guard/bin/kata-virtiofsd"))
	assert.Equal(t, 2, f.restarts, "containerd restarted for the new binary")
}

// kata-deploy's uninstall on containerd 2.x removes its import and its
// drop-in: ours, naming handlers that no longer exist, must go too.
func TestKataDeployUninstallTakesOurDropInAway(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	main := "version = 3\nimports = [\"/opt/kata/containerd/config.d/kata-deploy.toml\"]\n"
	f.write("/etc/containerd/config.toml", main)
	f.write("/opt/kata/containerd/config.d/kata-deploy.toml", kataDeployDropIn)
	ctx := context.Background()
	_, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	require.True(t, f.exists("/opt/kata-submount-guard/containerd/kata-submount-guard.toml"))

	// kata-deploy uninstalls: its import entry and its file go.
	f.write("/etc/containerd/config.toml", strings.Replace(f.read("/etc/containerd/config.toml"), `"/opt/kata/containerd/config.d/kata-deploy.toml", `, "", 1))
	require.NoError(t, os.Remove(f.abs("/opt/kata/containerd/config.d/kata-deploy.toml")))

	reports, err := f.installer().Apply(ctx)
	require.NoError(t, err)
	assert.Empty(t, reports)
	assert.Equal(t, "version = 3\nimports = []\n", f.read("/etc/containerd/config.toml"))
	assert.False(t, f.exists("/opt/kata-submount-guard/containerd/kata-submount-guard.toml"))
	assert.Equal(t, 2, f.restarts)
	for k := range f.api.get() {
		assert.False(t, strings.HasPrefix(k, LabelPrefix), "label %s of a shim that is gone", k)
	}
}

// A kata-deploy reinstall is undone at once, not an interval later.
func TestRunReappliesOnChange(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	f.opt.Interval = time.Hour
	f.opt.Nodes, f.opt.NodeName = nil, "" // no label to wait for
	var mu sync.Mutex
	restarts := 0
	f.opt.Restart = func(context.Context) error { mu.Lock(); restarts++; mu.Unlock(); return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.installer().Run(ctx) }()
	guarded := func() bool {
		b, err := os.ReadFile(f.abs("/etc/containerd/config.toml"))
		return err == nil && !strings.Contains(string(b), `"/opt/kata/bin/containerd-shim-kata-v2"`) && f.exists(qemuDir+"/config.d/90-submount-guard.toml")
	}
	require.Eventually(t, guarded, 5*time.Second, 20*time.Millisecond)

	f.write("/etc/containerd/config.toml", kataDeployMain)
	require.NoError(t, os.RemoveAll(f.abs(qemuDir)))
	f.write(qemuDir+"/configuration-qemu.toml", qemuConfig)
	require.Eventually(t, guarded, 5*time.Second, 20*time.Millisecond, "re-applied well before the hour")
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return restarts == 2 }, 5*time.Second, 20*time.Millisecond, "containerd restarted for the re-applied file")

	cancel()
	require.NoError(t, <-done)
}

// A handler our shim could not hand off correctly stays Kata's: one without
// ConfigPath (no drop-in can name its delegate), one whose configuration
// is missing (kata-deploy half-way through a reinstall).
func TestNoTakeOverWithoutTheShimsDropIn(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	f.write("/etc/containerd/config.toml", strings.Replace(kataDeployMain,
		"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata-qemu.options]\nConfigPath = \"/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml\"\n", "", 1))
	require.NoError(t, os.RemoveAll(f.abs(rsDir)))

	reports, err := f.installer().Apply(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(f.read("/etc/containerd/config.toml"), `runtime_path = "/opt/kata/`), "both handlers still run Kata's shim")
	assert.Equal(t, 0, f.restarts)
	require.Len(t, reports, 2)
	for _, r := range reports {
		assert.False(t, r.Guarded, r.Shim)
		assert.False(t, r.Protected, r.Shim)
	}
}

// A restart that failed (containerd's unit busy, say) is tried again on the
// next pass, although the files are already as they should be.
func TestFailedRestartIsRetried(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	fail := true
	f.opt.Restart = func(context.Context) error {
		f.restarts++
		if fail {
			return errors.New("Job for containerd.service canceled")
		}
		return nil
	}
	_, err := f.installer().Apply(context.Background())
	require.ErrorContains(t, err, "canceled")
	fail = false
	_, err = f.installer().Apply(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, f.restarts)
	_, err = f.installer().Apply(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, f.restarts, "and not again once it worked")
}

func TestUninstallRetriesAFailedRestart(t *testing.T) {
	f := newFixture(t, "6.1.38", "6.18.35")
	before := f.snapshot()
	_, err := f.installer().Apply(context.Background())
	require.NoError(t, err)
	fail := true
	f.opt.Restart = func(context.Context) error {
		f.restarts++
		if fail {
			return errors.New("Job for containerd.service canceled")
		}
		return nil
	}
	require.ErrorContains(t, f.installer().Uninstall(context.Background()), "canceled")
	fail = false
	require.NoError(t, f.installer().Uninstall(context.Background()))
	assert.Equal(t, 3, f.restarts, "install, the failed one, the retry")
	assert.Equal(t, before, f.snapshot())
}
