package hostcheck

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunOnThisHost runs the checks against this machine's real /proc, /sys
// and /dev. What they find depends on the host, so the test checks
// consistency with the files themselves: every verdict must agree with what
// the files say, failures must say why, and nothing may crash when
// /proc/modules, vmx/svm or vhost modules are missing.
func TestRunOnThisHost(t *testing.T) {
	res, err := Run(context.Background(), Options{NoModprobe: true})
	require.NoError(t, err)
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	require.NoError(t, err)
	first, _, _ := strings.Cut(string(cpuinfo), "\n\n")
	require.NotEmpty(t, res.CPUVendor)
	require.Contains(t, first, res.CPUVendor)

	byName := map[string]Check{}
	for _, c := range res.Checks {
		byName[c.Name] = c
		if !c.OK {
			require.NotEmpty(t, c.Detail, "a failed check must say why: %+v", c)
		}
	}
	flags := " " + field(first, "flags") + " "
	for _, f := range []string{"lm", "sse4_1"} {
		require.Equal(t, strings.Contains(flags, " "+f+" "), byName[f].OK, f)
	}
	virt := "vmx"
	if res.CPUVendor == vendorAMD {
		virt = "svm"
	}
	require.Contains(t, byName, virt)
	require.Equal(t, strings.Contains(flags, " "+virt+" "), byName[virt].OK)

	_, modErr := os.Stat("/proc/modules")
	for _, m := range []string{"kvm", "vhost", "vhost_net", "vhost_vsock"} {
		_, err := os.Stat(filepath.Join("/sys/module", m))
		c := byName[m]
		require.Equal(t, err == nil, c.OK, m)
		if !c.OK && modErr != nil {
			require.Contains(t, c.Detail, "this kernel cannot load modules (no /proc/modules)")
		}
	}
	require.False(t, byName["vhost_vsock"].Required)

	capable := true
	for _, c := range res.Checks {
		if c.Required && !c.OK {
			capable = false
		}
	}
	require.Equal(t, capable, res.Capable)
	if !strings.Contains(flags, " "+virt+" ") {
		require.False(t, res.Capable, "a CPU without %s is not capable", virt)
	}

	require.NotNil(t, res.KVM)
	if _, err := os.Stat("/dev/kvm"); err != nil {
		require.False(t, res.KVM.OK)
		require.Contains(t, res.KVM.Detail, "does not exist")
	}
	t.Logf("vendor=%s capable=%v kvm=%+v", res.CPUVendor, res.Capable, *res.KVM)
	for _, c := range res.Failed() {
		t.Logf("missing: %s %s: %s", c.Kind, c.Name, c.Detail)
	}
}

func TestRunRemoteSkipsKVM(t *testing.T) {
	res, err := Run(context.Background(), Options{NoModprobe: true, Hypervisor: "remote"})
	require.NoError(t, err)
	require.Nil(t, res.KVM)
}

// TestRunMissingFiles points the checks at paths that do not exist on this
// host: cpuinfo is the only hard error; the rest are findings.
func TestRunMissingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Run(context.Background(), Options{ProcCPUInfo: filepath.Join(dir, "cpuinfo")})
	require.ErrorContains(t, err, "read CPU details")

	res, err := Run(context.Background(), Options{
		SysModuleDir: filepath.Join(dir, "module"), ProcModules: filepath.Join(dir, "modules"),
		KVMDevice: filepath.Join(dir, "kvm"),
	})
	require.NoError(t, err)
	require.False(t, res.Capable)
	require.False(t, res.KVM.OK)
	require.Equal(t, filepath.Join(dir, "kvm")+" does not exist: load kvm and kvm_intel or kvm_amd", res.KVM.Detail)
	for _, c := range res.Checks {
		if c.Kind == KindModule {
			require.False(t, c.OK)
			require.Equal(t, "not built in (no "+filepath.Join(dir, "module", c.Name)+") and this kernel cannot load modules (no "+filepath.Join(dir, "modules")+")", c.Detail)
		}
	}
}

func TestGatherOnThisHost(t *testing.T) {
	info, err := Gather(InfoOptions{})
	require.NoError(t, err)
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(rel)), info.Kernel)
	require.NotEmpty(t, info.DistroName)
	require.NotZero(t, info.MemTotal)
	require.LessOrEqual(t, info.MemFree, info.MemTotal)
	_, err = os.Stat("/dev/vhost-vsock")
	require.Equal(t, err == nil, info.SupportVSocks)
}

func TestAnchored(t *testing.T) {
	require.True(t, anchored("fpu vmx lm", "vmx"))
	require.False(t, anchored("fpu vmxx lm", "vmx"))
	require.True(t, anchored("sse4_1 sse4_2", "sse4_1"))
	require.False(t, anchored("sse4_10", "sse4_1"))
	require.False(t, anchored("", "lm"))
}
