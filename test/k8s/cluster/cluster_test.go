package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRuncPodAndTeardown: the node runs a plain (runc) pod on the CNI
// bridge, and the cluster's cleanup leaves nothing behind: no process of
// the cluster or of the pod, no mount, no cgroup of the pod's containers,
// no directory it created on the host, no file.
func TestRuncPodAndTeardown(t *testing.T) {
	Requires(t)
	var (
		c         *Cluster
		pids      []int
		container string
	)
	t.Run("up", func(t *testing.T) {
		c = Start(t, Options{})
		c.Apply(`apiVersion: v1
kind: Pod
metadata:
  name: plain
  namespace: default
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: ` + TestImage + `
    imagePullPolicy: Never
    command: ["sleep", "3600"]
`)
		c.WaitFor("pod plain Running", 2*time.Minute, func() (bool, string) {
			out, err := c.Kubectl("get", "pod", "plain", "-o", "jsonpath={.status.phase} {.status.podIP} {.status.containerStatuses[0].containerID}")
			f := strings.Fields(out)
			if err != nil || len(f) != 3 || f[0] != "Running" {
				return false, out + fmt.Sprint(err)
			}
			container = strings.TrimPrefix(f[2], "containerd://")
			require.True(t, strings.HasPrefix(f[1], "10.213.1."), "pod IP %s from the CNI bridge's subnet", f[1])
			return true, ""
		})
		pids = c.processesInNamespaces()
		require.NotEmpty(t, pids)
	})
	require.NotNil(t, c)
	require.NotEmpty(t, container, "the pod never ran")

	require.NoDirExists(t, c.Dir)
	for _, pid := range pids {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// A zombie has ended; reaping a reparented shim is init's part.
		if s := string(stat); strings.Contains(s, ") Z ") {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d of the cluster is left: %s [%s]", pid, stat, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err == nil {
			require.NotContains(t, string(cg), container, "process %s of the pod's container still runs", e.Name())
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotContains(t, string(mounts), c.Dir, "a mount of the cluster is left")
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io/" + container)
	require.Empty(t, cgroups, "the pod's container cgroups are left")
	for _, d := range c.created {
		_, err := os.Stat(d)
		require.True(t, errors.Is(err, os.ErrNotExist), "%s, created as a mount point, is left", d)
	}
}
