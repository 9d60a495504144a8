package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/k8s/cluster"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// The installer's interfaces (deploy contract): the manifest, its
// DaemonSet, the image make image writes, the labels it sets.
const (
	manifestPath   = "deploy/kata-submount-guard-deploy.yaml"
	daemonSetName  = "kata-submount-guard-deploy"
	imageArchive   = "kata-submount-guard-image.tar"
	defaultImage   = "ghcr.io/kata-submount-guard/kata-submount-guard-deploy:latest"
	kataLabel      = "katacontainers.io/kata-runtime"
	guardLabelBase = "submount-guard.katacontainers.io/"
	nfdFile        = "kata-submount-guard"
	// kataShim is kata-deploy's name of the shim behind kataHandler (its
	// ConfigPath's runtimes/<shim>/), which the labels name.
	kataShim = "qemu"
)

// TestDaemonSetInstallsAndUninstalls runs the installer's DaemonSet on a
// node where kata-deploy installed Kata 4.1.0 (simulated under a temporary
// host prefix, see kataDeploy): its image built by make image and imported
// into the node's containerd, its manifest applied with the env pointed at
// that prefix and a restart command that restarts the harness's containerd.
// It must install our files and wire our shim in front of Kata's, label the
// node and write the NFD file with the verdict of Kata's kernel (fixed), so
// that a kata pod then reaches our shim and Kata's; when kata-deploy is
// reinstalled under it (kataDeploy.reinstall), it must put our runtime_path
// and drop-in back, restart containerd, end with the labels as before, and
// a kata pod must again reach our shim and Kata's; and `uninstall` must
// restore the prefix, containerd's config included, byte for byte and
// remove the labels and the NFD file.
func TestDaemonSetInstallsAndUninstalls(t *testing.T) {
	cluster.Requires(t)
	root := testutil.RepoRoot(t)
	_, err := os.Stat(filepath.Join(root, manifestPath))
	testutil.Require(t, err == nil, manifestPath+" missing (the deploy branch adds it)")
	testutil.RequiresCommand(t, "make")
	kernels := testutil.GuestKernelsDir(t)
	kd := simulateKataDeploy(t, filepath.Join(kernels, "fixed", "bzImage"))
	guardPrefix := filepath.Join(kd.root, "opt", "kata-submount-guard")
	nfdDir := filepath.Join(kd.root, "etc", "kubernetes", "node-feature-discovery", "features.d")
	// NFD's features directory exists where NFD runs.
	require.NoError(t, os.MkdirAll(nfdDir, 0o755))

	imageDir := t.TempDir()
	mk := exec.Command("make", "image", "BIN="+imageDir)
	mk.Dir = root
	out, err := mk.CombinedOutput()
	require.NoError(t, err, "make image:\n%s", out)

	c := cluster.Start(t, kd.clusterOptions())
	kd.backUpContainerdConfig(t)
	before := snapshotTree(t, kd.root)
	configBefore, err := os.ReadFile(kd.containerdConfig)
	require.NoError(t, err)
	out2, err := c.Ctr("images", "import", filepath.Join(imageDir, imageArchive))
	require.NoError(t, err, out2)

	env := map[string]string{
		"HOST_ROOT":                  "/host",
		"KATA_PREFIX":                kd.kata,
		"GUARD_PREFIX":               guardPrefix,
		"CONTAINERD_CONF_FILE":       kd.containerdConfig,
		"CONTAINERD_RESTART_COMMAND": c.RestartCommand(),
		"NFD_FEATURES_DIR":           nfdDir,
		"RECONCILE_INTERVAL":         "1s",
		// No kube-proxy: the apiserver's own address.
		"KUBERNETES_SERVICE_HOST": cluster.NodeIP,
		"KUBERNETES_SERVICE_PORT": fmt.Sprint(cluster.APIServerPort),
	}
	objects := manifestObjects(t, c, filepath.Join(root, manifestPath))
	ds := pointDaemonSet(t, objects, env)
	apply := func(objs []map[string]any) {
		b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
		require.NoError(t, err)
		out, err := c.KubectlStdin(bytes.NewReader(b), "apply", "-f", "-")
		require.NoError(t, err, out)
	}

	t.Run("install: files, containerd wired, node labels and NFD file", func(t *testing.T) {
		out, err := c.Kubectl("label", "node", cluster.NodeName, kataLabel+"=true")
		require.NoError(t, err, out)
		apply(objects)
		c.WaitFor("the node labelled by the installer", 3*time.Minute, func() (bool, string) {
			labels := nodeLabels(t, c)
			return labels[guardLabelBase+kataShim] == "fixed" && labels[guardLabelBase+kataShim+".protected"] == "true", fmt.Sprint(labels, "\n", dsPodLog(c))
		})
		b, err := os.ReadFile(filepath.Join(nfdDir, nfdFile))
		require.NoError(t, err, "NFD features file")
		require.Contains(t, strings.Split(string(b), "\n"), guardLabelBase+kataShim+"=fixed")
		require.Contains(t, strings.Split(string(b), "\n"), guardLabelBase+kataShim+".protected=true")
		for _, bin := range []string{"containerd-shim-kata-v2", "kata-runtime", "kata-virtiofsd"} {
			fi, err := os.Stat(filepath.Join(guardPrefix, "bin", bin))
			require.NoError(t, err, "installed %s", bin)
			require.NotZero(t, fi.Mode()&0o111, "%s executable", bin)
		}
		// kata-deploy's handler now runs our shim, which hands off to
		// Kata's where kata-deploy put it.
		cfg, err := os.ReadFile(kd.containerdConfig)
		require.NoError(t, err)
		require.Regexp(t, `(?m)^\s*runtime_path\s*=\s*"`+regexp.QuoteMeta(filepath.Join(guardPrefix, "bin", "containerd-shim-kata-v2"))+`"`, string(cfg))
		dropIn, err := os.ReadFile(filepath.Join(kd.configD, "90-submount-guard.toml"))
		require.NoError(t, err, "the installer's [submount_guard] drop-in beside kata-deploy's configuration")
		require.Contains(t, string(dropIn), fmt.Sprintf("delegate_shim = %q", kd.shim))
		require.GreaterOrEqual(t, c.Restarts(), 1, "the installer restarted containerd through CONTAINERD_RESTART_COMMAND")
	})

	t.Run("the labels follow the kernel: a vulnerable one is labelled so within seconds", func(t *testing.T) {
		// An operator's drop-in switching Kata's kernel; the installer
		// watches kata-deploy's config.d. Removed again, so that the
		// labels go back and uninstall finds the tree as it was.
		dropIn := filepath.Join(kd.configD, "50-test-kernel.toml")
		require.NoError(t, os.WriteFile(dropIn, []byte(fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\n", filepath.Join(kernels, "vulnerable", "bzImage"))), 0o644))
		c.WaitFor("the node labelled vulnerable", time.Minute, func() (bool, string) {
			labels := nodeLabels(t, c)
			return labels[guardLabelBase+kataShim] == "vulnerable", fmt.Sprint(labels)
		})
		b, err := os.ReadFile(filepath.Join(nfdDir, nfdFile))
		require.NoError(t, err)
		require.Contains(t, strings.Split(string(b), "\n"), guardLabelBase+kataShim+"=vulnerable", "the NFD file follows")
		require.NoError(t, os.Remove(dropIn))
		c.WaitFor("the node labelled fixed again", time.Minute, func() (bool, string) {
			labels := nodeLabels(t, c)
			return labels[guardLabelBase+kataShim] == "fixed", fmt.Sprint(labels)
		})
	})

	t.Run("a kata pod reaches our shim, then Kata's", func(t *testing.T) {
		c.Apply(runtimeClass)
		c.Apply(kataPod("kata-after-install"))
		waitPodEvent(t, c, "kata-after-install", "FailedCreatePodSandBox", vsockError(kd.config))
		line := shimLogLine(t, c, "configuration resolved as the delegate does")
		require.Contains(t, line, "delegate="+kd.shim+" ", "our shim, installed by the DaemonSet, hands off to Kata's")
		require.Contains(t, line, "delegate_version="+kataTag)
		line = shimLogLine(t, c, "guest kernel check passed")
		require.Contains(t, line, "config="+kd.config)
		require.Contains(t, line, "verdict=fixed")
		m, err := c.Syslog.WaitFor(`msg="loaded configuration" file=`+kd.config+" ", 10*time.Second)
		require.NoError(t, err, "Kata's shim logged the configuration it loaded")
		require.Contains(t, m, "source=katautils")
		deletePod(t, c, "kata-after-install")
	})

	t.Run("a kata-deploy reinstall is undone: runtime_path, drop-in, containerd restarted, labels, a pod through our shim", func(t *testing.T) {
		start := time.Now()
		labelsBefore := guardLabels(nodeLabels(t, c))
		require.Equal(t, "true", labelsBefore[kataLabel])
		nfdBefore, err := os.ReadFile(filepath.Join(nfdDir, nfdFile))
		require.NoError(t, err)
		restarts := c.Restarts()
		resolved := len(shimLogLines(c, "configuration resolved as the delegate does"))
		passed := len(shimLogLines(c, "guest kernel check passed"))
		kataLines := len(c.Syslog.Messages())

		kd.reinstall(t, c)
		reinstalled := time.Now()

		ours := regexp.MustCompile(`(?m)^\s*runtime_path\s*=\s*"` + regexp.QuoteMeta(filepath.Join(guardPrefix, "bin", "containerd-shim-kata-v2")) + `"`)
		c.WaitFor("the installer to take the handler over again and restart containerd", time.Minute, func() (bool, string) {
			cfg, err := os.ReadFile(kd.containerdConfig)
			if err != nil || !ours.Match(cfg) {
				return false, fmt.Sprint("runtime_path not ours: ", err, "\n", string(cfg))
			}
			dropIn, err := os.ReadFile(filepath.Join(kd.configD, "90-submount-guard.toml"))
			if err != nil || !strings.Contains(string(dropIn), fmt.Sprintf("delegate_shim = %q", kd.shim)) {
				return false, fmt.Sprint("drop-in not back: ", err, "\n", string(dropIn))
			}
			return c.Restarts() > restarts, fmt.Sprintf("restarts through CONTAINERD_RESTART_COMMAND: %d, before the reinstall %d", c.Restarts(), restarts)
		})
		c.WaitFor("the node's labels and NFD file as before the reinstall", time.Minute, func() (bool, string) {
			labels := guardLabels(nodeLabels(t, c))
			nfd, _ := os.ReadFile(filepath.Join(nfdDir, nfdFile))
			return fmt.Sprint(labels) == fmt.Sprint(labelsBefore) && bytes.Equal(nfd, nfdBefore), fmt.Sprint(labels, " want ", labelsBefore, "\n", string(nfd))
		})
		reapplied := time.Since(reinstalled)

		c.Apply(kataPod("kata-after-reinstall"))
		waitPodEvent(t, c, "kata-after-reinstall", "FailedCreatePodSandBox", vsockError(kd.config))
		lines := shimLogLines(c, "configuration resolved as the delegate does")
		require.Greater(t, len(lines), resolved, "our shim ran for the pod after the reinstall")
		require.Contains(t, lines[len(lines)-1], "delegate="+kd.shim+" ", "and handed off to Kata's")
		lines = shimLogLines(c, "guest kernel check passed")
		require.Greater(t, len(lines), passed)
		require.Contains(t, lines[len(lines)-1], "config="+kd.config)
		require.Contains(t, lines[len(lines)-1], "verdict=fixed")
		c.WaitFor("Kata's shim to log the configuration it loaded", 10*time.Second, func() (bool, string) {
			for _, m := range c.Syslog.Messages()[kataLines:] {
				if strings.Contains(m, `msg="loaded configuration" file=`+kd.config+" ") && strings.Contains(m, "source=katautils") {
					return true, ""
				}
			}
			return false, "no such syslog message since the reinstall"
		})
		deletePod(t, c, "kata-after-reinstall")
		t.Logf("reinstall undone %s after kata-deploy's; subtest %s", reapplied.Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
	})

	t.Run("uninstall restores the prefix and containerd's config byte for byte, removes labels", func(t *testing.T) {
		restarts := c.Restarts()
		out, err := c.Kubectl("delete", "daemonset", daemonSetName, "--namespace", "kube-system", "--wait=true", "--timeout=60s")
		require.NoError(t, err, out)
		runUninstall(t, c, ds)
		after := snapshotTree(t, kd.root)
		require.Empty(t, before.diff(after), "the host prefix after uninstall")
		configAfter, err := os.ReadFile(kd.containerdConfig)
		require.NoError(t, err)
		require.Equal(t, string(configBefore), string(configAfter))
		for k := range nodeLabels(t, c) {
			require.False(t, strings.HasPrefix(k, guardLabelBase), "label %s left", k)
		}
		require.Greater(t, c.Restarts(), restarts, "uninstall restarted containerd")
	})
}

// manifestObjects reads the manifest as kubectl parses it (client-side):
// one JSON object per document.
func manifestObjects(t *testing.T, c *cluster.Cluster, path string) []map[string]any {
	t.Helper()
	out, err := c.Kubectl("create", "--dry-run=client", "-o", "json", "-f", path)
	require.NoError(t, err, out)
	var objs []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var o map[string]any
		require.NoError(t, dec.Decode(&o))
		objs = append(objs, o)
	}
	return objs
}

// pointDaemonSet sets env on every container of the DaemonSet (replacing
// values of the names it has, adding the rest) and checks its image is the
// one make image names. It returns the DaemonSet.
func pointDaemonSet(t *testing.T, objects []map[string]any, env map[string]string) map[string]any {
	t.Helper()
	var ds map[string]any
	for _, o := range objects {
		if o["kind"] == "DaemonSet" {
			ds = o
		}
	}
	require.NotNil(t, ds, "no DaemonSet in %s", manifestPath)
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	for _, ci := range spec["containers"].([]any) {
		ctr := ci.(map[string]any)
		require.Equal(t, defaultImage, ctr["image"])
		seen := map[string]bool{}
		list, _ := ctr["env"].([]any)
		for _, ei := range list {
			e := ei.(map[string]any)
			if v, ok := env[e["name"].(string)]; ok {
				e["value"] = v
				delete(e, "valueFrom")
				seen[e["name"].(string)] = true
			}
		}
		for name, v := range env {
			if !seen[name] {
				list = append(list, map[string]any{"name": name, "value": v})
			}
		}
		ctr["env"] = list
	}
	return ds
}

// runUninstall runs the installer's `uninstall` in a pod made from the
// DaemonSet's pod template, on the node, and waits for it to succeed.
func runUninstall(t *testing.T, c *cluster.Cluster, ds map[string]any) {
	t.Helper()
	tmpl := ds["spec"].(map[string]any)["template"].(map[string]any)
	spec := tmpl["spec"].(map[string]any)
	spec["restartPolicy"] = "Never"
	spec["nodeName"] = cluster.NodeName
	for _, ci := range spec["containers"].([]any) {
		ctr := ci.(map[string]any)
		ctr["args"] = []string{"uninstall"}
		delete(ctr, "lifecycle")
		delete(ctr, "readinessProbe")
		delete(ctr, "livenessProbe")
	}
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "kata-submount-guard-uninstall", "namespace": "kube-system"},
		"spec":     spec,
	}
	b, err := json.Marshal(pod)
	require.NoError(t, err)
	out, err := c.KubectlStdin(bytes.NewReader(b), "apply", "-f", "-")
	require.NoError(t, err, out)
	c.WaitFor("the uninstall pod to succeed", 3*time.Minute, func() (bool, string) {
		phase, _ := c.Kubectl("get", "pod", "kata-submount-guard-uninstall", "--namespace", "kube-system", "-o", "jsonpath={.status.phase}")
		if phase == "Failed" {
			logs, _ := os.ReadFile(podLogPath(c, "kube-system", "kata-submount-guard-uninstall"))
			t.Fatalf("uninstall failed:\n%s", logs)
		}
		return phase == "Succeeded", phase
	})
}

// guardLabels is labels' guard labels and kata-deploy's.
func guardLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if strings.HasPrefix(k, guardLabelBase) || k == kataLabel {
			out[k] = v
		}
	}
	return out
}

func nodeLabels(t *testing.T, c *cluster.Cluster) map[string]string {
	t.Helper()
	out, err := c.Kubectl("get", "node", cluster.NodeName, "-o", "jsonpath={.metadata.labels}")
	require.NoError(t, err, out)
	labels := map[string]string{}
	require.NoError(t, json.Unmarshal([]byte(out), &labels))
	return labels
}

// podLogPath finds a pod's container log under kubelet's pod log directory
// (kubectl logs needs the apiserver to reach kubelet, which this cluster
// does not set up).
func podLogPath(c *cluster.Cluster, ns, pod string) string {
	m, _ := filepath.Glob(filepath.Join(c.Dir, "kubelet", "pod-logs", ns+"_"+pod+"_*", "*", "*.log"))
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

// dsPodLog is the installer DaemonSet pod's log so far.
func dsPodLog(c *cluster.Cluster) string {
	m, _ := filepath.Glob(filepath.Join(c.Dir, "kubelet", "pod-logs", "kube-system_"+daemonSetName+"-*", "*", "*.log"))
	var b strings.Builder
	for _, p := range m {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}
