package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/k8s/cluster"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// TestKataPodThroughGuardToKata: on a node where kata-deploy installed Kata
// 4.1.0 and the guard was installed in front of Kata's shim as the README
// says, a pod with RuntimeClass kata goes kubelet → CRI → our shim → Kata's
// real shim. This machine has no vhost-vsock, so Kata stops at sandbox
// creation with an error naming the file it loaded: seeing it in the pod's
// events proves the hand-off and that Kata loaded the file our decision was
// made from. A vulnerable kernel is refused before Kata runs, and the event
// says which kernel.
func TestKataPodThroughGuardToKata(t *testing.T) {
	cluster.Requires(t)
	kernels := testutil.GuestKernelsDir(t)
	fixed, vulnerable := filepath.Join(kernels, "fixed", "bzImage"), filepath.Join(kernels, "vulnerable", "bzImage")
	kd := simulateKataDeploy(t, fixed)
	stateDir := filepath.Join(kd.root, "run", "kata-containers", "submount-guard")
	installGuard(t, kd, stateDir)
	c := cluster.Start(t, kd.clusterOptions())
	c.Apply(runtimeClass)

	t.Run("fixed kernel: our shim allows, Kata 4.1.0 loads the same file and stops at vsock", func(t *testing.T) {
		c.Apply(kataPod("kata-fixed"))
		msg := waitPodEvent(t, c, "kata-fixed", "FailedCreatePodSandBox", vsockError(kd.config))
		require.Contains(t, msg, "failed to create containerd task", "the sandbox got as far as the shim task")

		// Our decision, at debug level in containerd's log: Kata 4's
		// rules (it asked Kata's shim), the file Kata then loaded, the
		// resolved kernel and its verdict.
		line := shimLogLine(t, c, "guest kernel check passed")
		for _, field := range []string{
			"action=allow", "verdict=fixed", "delegate=go-4", "version=6.1.192",
			"config=" + kd.config, "kernel=" + kd.kernel,
		} {
			require.Contains(t, line, field, "our shim's decision: %s", line)
		}
		// Kata's shim logs to syslog (the test's /dev/log): its own
		// katautils loaded the file our shim judged.
		m, err := c.Syslog.WaitFor(`msg="loaded configuration" file=`+kd.config+" ", 10*time.Second)
		require.NoError(t, err, "Kata's shim logged the configuration it loaded")
		require.Contains(t, m, "source=katautils")
		// Each failed start was deleted through our shim and Kata's: the
		// plans went with them (kubelet retries until the pod is gone),
		// and Kata was identified once, by its --version.
		deletePod(t, c, "kata-fixed")
		c.WaitFor("no plan left", 30*time.Second, func() (bool, string) {
			p := planFiles(t, stateDir)
			return len(p) == 0, strings.Join(p, " ")
		})
		cache, err := os.ReadDir(filepath.Join(stateDir, "delegate-cache"))
		require.NoError(t, err)
		require.Len(t, cache, 1, "Kata %s identified once, from its --version", kataTag)
	})

	t.Run("vulnerable kernel: refused before Kata runs, the event names the kernel", func(t *testing.T) {
		// An operator's drop-in switching the kernel, as kata-deploy's
		// own config.d drop-ins do.
		dropIn := filepath.Join(kd.configD, "90-test-kernel.toml")
		require.NoError(t, os.WriteFile(dropIn, []byte(fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\n", vulnerable)), 0o644))
		t.Cleanup(func() { os.Remove(dropIn) })
		kataLines := len(c.Syslog.Messages())

		c.Apply(kataPod("kata-vulnerable"))
		refusal := fmt.Sprintf("kata-submount-guard: guest kernel %s (6.1.69) lacks the FUSE submount fix (Linux c4d361f66ac9; fixed in 6.7, 6.6.8, 6.1.70, 5.15.146) (evidence: btf); "+
			`on_vulnerable = refuse: sandbox creation refused. Boot a fixed kernel, or set [submount_guard] on_vulnerable = "warn" in %s`, vulnerable, kd.config)
		msg := waitPodEvent(t, c, "kata-vulnerable", "FailedCreatePodSandBox", refusal)
		require.Contains(t, msg, "failed to start shim: start failed: "+refusal, "the refusal is the shim's start failure")
		require.NotContains(t, msg, "vsock", "Kata never ran")
		line := shimLogLine(t, c, "sandbox creation refused")
		require.Contains(t, line, "verdict=vulnerable")
		require.Contains(t, line, "kernel="+vulnerable)
		for _, m := range c.Syslog.Messages()[kataLines:] {
			require.NotContains(t, m, "source=katautils", "Kata's shim ran for a refused sandbox")
		}
		require.Empty(t, planFiles(t, stateDir), "a refusal leaves no plan")
		deletePod(t, c, "kata-vulnerable")
	})
}

// installGuard installs the guard in front of Kata's shim as the README's
// "Installing with containerd and Kubernetes" says: our binaries in
// <root>/opt/kata-submount-guard/bin, Kata's shim renamed to .upstream, ours
// linked in its place, and [submount_guard] in a config.d drop-in.
func installGuard(t *testing.T, kd *kataDeploy, stateDir string) {
	t.Helper()
	bin := filepath.Join(kd.root, "opt", "kata-submount-guard", "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	for _, name := range []string{"containerd-shim-kata-v2", "kata-runtime"} {
		copyFile(t, testutil.BuildCommand(t, name), filepath.Join(bin, name), 0o755)
	}
	require.NoError(t, os.Rename(kd.shim, kd.shim+".upstream"))
	require.NoError(t, os.Symlink(filepath.Join(bin, "containerd-shim-kata-v2"), kd.shim))
	require.NoError(t, os.WriteFile(filepath.Join(kd.configD, "50-submount-guard.toml"), []byte(fmt.Sprintf(`[submount_guard]
delegate_shim = %q
on_vulnerable = "refuse"
on_unknown = "refuse"
state_dir = %q
`, kd.shim+".upstream", stateDir)), 0o644))
}

// vsockError is how Kata's create fails on this machine, naming the file it
// loaded.
func vsockError(config string) string {
	return config + ": host system doesn't support vsock: stat /dev/vhost-vsock: no such file or directory"
}

// waitPodEvent waits up to 2 minutes for an event of pod with reason whose
// message contains want, and returns that message.
func waitPodEvent(t *testing.T, c *cluster.Cluster, pod, reason, want string) string {
	t.Helper()
	var found string
	c.WaitFor(fmt.Sprintf("a %s event of pod %s containing %q", reason, pod, want), 2*time.Minute, func() (bool, string) {
		out, err := c.Kubectl("get", "events", "--namespace", "default",
			"--field-selector", "involvedObject.name="+pod+",reason="+reason,
			"-o", `go-template={{range .items}}{{.message}}{{"\n"}}{{end}}`)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range strings.Split(out, "\n") {
			if strings.Contains(m, want) {
				found = m
				return true, ""
			}
		}
		return false, out
	})
	return found
}

// shimLogLine returns the last line of containerd's log that our shim (or
// Kata's, same source) logged with message msg.
func shimLogLine(t *testing.T, c *cluster.Cluster, msg string) string {
	t.Helper()
	lines := shimLogLines(c, msg)
	require.NotEmpty(t, lines, "no %q line of our shim in containerd's log", msg)
	return lines[len(lines)-1]
}

// shimLogLines returns every line of containerd's log that our shim (or
// Kata's) logged with message msg, oldest first.
func shimLogLines(c *cluster.Cluster, msg string) []string {
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `[^"]*".*source=containerd-kata-shim-v2`)
	var out []string
	for _, l := range strings.Split(c.Log("containerd"), "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// planFiles lists the sandbox plans in stateDir.
func planFiles(t *testing.T, stateDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(stateDir, "*.json"))
	require.NoError(t, err)
	return m
}

func deletePod(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	out, err := c.Kubectl("delete", "pod", name, "--namespace", "default", "--grace-period=0", "--force", "--wait=true", "--timeout=60s")
	require.NoError(t, err, out)
}
