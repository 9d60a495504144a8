package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// useCRI makes crictl (installed by test/setup/20-crictl.sh) available and
// waits until CRI sees the test image.
func (c *containerd) useCRI(t testing.TB) {
	t.Helper()
	c.crictlBin = testutil.RequiresCacheFile(t, "bin/crictl")
	sock := "unix://" + c.address
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, "crictl.yaml"), []byte(fmt.Sprintf(
		"runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n", sock, sock)), 0o644))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := c.crictl("inspecti", testImage)
		if err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "CRI never saw %s: %v\n%s", testImage, err, c.log())
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *containerd) crictl(args ...string) (stdout, stderr string, err error) {
	// An explicit config: crictl otherwise reads /etc/crictl.yaml.
	cmd := exec.Command(c.crictlBin, append([]string{"--config", filepath.Join(c.dir, "crictl.yaml")}, args...)...)
	stdout, stderr, err = run(cmd)
	return strings.TrimSpace(stdout), stderr, err
}

// pod describes one CRI pod sandbox of the tests: host network (no CNI here).
type pod struct {
	name        string
	annotations map[string]string
}

func (c *containerd) writeJSON(t testing.TB, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	p := filepath.Join(c.dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func (c *containerd) podConfig(t testing.TB, p pod) string {
	t.Helper()
	return c.writeJSON(t, "pod-"+p.name+".json", map[string]any{
		"metadata":      map[string]any{"name": p.name, "namespace": "ksg", "uid": "uid-" + p.name, "attempt": 0},
		"annotations":   p.annotations,
		"log_directory": filepath.Join(c.dir, "pods", p.name),
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
		},
	})
}

func (c *containerd) containerConfig(t testing.TB, podName, name string, command ...string) string {
	t.Helper()
	return c.writeJSON(t, fmt.Sprintf("ctr-%s-%s.json", podName, name), map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": testImage},
		"command":  command,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	})
}

// runPod runs `crictl runp --runtime handler` and returns the sandbox id.
func (c *containerd) runPod(t testing.TB, handler string, p pod) (id, stderr string, err error) {
	t.Helper()
	return c.crictl("runp", "--runtime", handler, c.podConfig(t, p))
}

// runKataPod runs p with the kata handler, which must start it, and returns
// its sandbox id and the plan our shim wrote for it in stateDir.
func (c *containerd) runKataPod(t testing.TB, p pod, stateDir string) (string, *plan.Plan) {
	t.Helper()
	podID, stderr, err := c.runPod(t, "kata", p)
	require.NoError(t, err, stderr)
	pl, err := plan.Read(stateDir, podID)
	require.NoError(t, err)
	return podID, pl
}

// startContainer creates and starts a container in a running pod.
func (c *containerd) startContainer(t testing.TB, podID string, p pod, name string, command ...string) string {
	t.Helper()
	id, stderr, err := c.crictl("create", podID, c.containerConfig(t, p.name, name, command...), c.podConfig(t, p))
	require.NoError(t, err, "crictl create: %s", stderr)
	_, stderr, err = c.crictl("start", id)
	require.NoError(t, err, "crictl start: %s", stderr)
	return id
}

// removePod stops and removes a pod and its containers.
func (c *containerd) removePod(t testing.TB, id string) {
	t.Helper()
	_, stderr, err := c.crictl("stopp", id)
	require.NoError(t, err, "crictl stopp: %s", stderr)
	_, stderr, err = c.crictl("rmp", id)
	require.NoError(t, err, "crictl rmp: %s", stderr)
}
