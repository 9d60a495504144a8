package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// privateContainerd runs Debian's containerd on a configuration file and
// restarts it as CONTAINERD_RESTART_COMMAND would.
type privateContainerd struct {
	t      *testing.T
	config string
	dir    string
	cmd    *exec.Cmd
	crictl string
}

func (c *privateContainerd) start() {
	c.t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(c.t, err)
	defer logf.Close()
	c.cmd = exec.Command("containerd", "--config", c.config)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(c.t, c.cmd.Start())
	require.Eventually(c.t, func() bool { _, err := c.runtime("runc"); return err == nil }, 30*time.Second, 100*time.Millisecond, "containerd with CRI up")
}

func (c *privateContainerd) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.cmd.Wait()
	c.cmd = nil
}

// runtime is CRI's view of one runtime handler (crictl info).
func (c *privateContainerd) runtime(handler string) (map[string]any, error) {
	out, err := exec.Command(c.crictl, "--runtime-endpoint", "unix://"+filepath.Join(c.dir, "c.sock"), "info").Output()
	if err != nil {
		return nil, err
	}
	var info struct {
		Config struct {
			Containerd struct {
				Runtimes map[string]map[string]any `json:"runtimes"`
			} `json:"containerd"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, err
	}
	r, ok := info.Config.Containerd.Runtimes[handler]
	if !ok {
		return nil, fmt.Errorf("no runtime %s", handler)
	}
	return r, nil
}

// containerd 1.6 itself reads the edited config.toml: the Kata handlers run
// our shim with kata-deploy's ConfigPath, and after Uninstall Kata's again.
func TestContainerdLoadsTheTakeOver(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_INTEGRATION")
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "containerd")
	c := &privateContainerd{t: t, crictl: testutil.RequiresCacheFile(t, "bin/crictl")}
	var err error
	c.dir, err = os.MkdirTemp("", "ksg-deploy-") // short: socket paths
	require.NoError(t, err)
	t.Cleanup(func() { c.stop(); os.RemoveAll(c.dir) })

	f := newFixture(t, "6.1.38", "6.18.35")
	original := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n\n"+
		"[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n"+
		"  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n    runtime_type = \"io.containerd.runc.v2\"\n\n",
		filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), filepath.Join(c.dir, "c.sock"), filepath.Join(c.dir, "c.sock.ttrpc")) +
		kataDeployHandlers
	f.write("/etc/containerd/config.toml", original)
	c.config = f.abs("/etc/containerd/config.toml")
	c.start()
	f.opt.Restart = func(context.Context) error { c.stop(); c.start(); return nil }

	r, err := c.runtime("kata-qemu")
	require.NoError(t, err)
	assert.Equal(t, "/opt/kata/bin/containerd-shim-kata-v2", r["runtimePath"])

	_, err = f.installer().Apply(context.Background())
	require.NoError(t, err)
	for handler, configPath := range map[string]string{
		"kata-qemu":            qemuDir + "/configuration-qemu.toml",
		"kata-qemu-runtime-rs": rsDir + "/configuration-qemu-runtime-rs.toml",
	} {
		r, err := c.runtime(handler)
		require.NoError(t, err)
		assert.Equal(t, oursShim, r["runtimePath"], handler)
		assert.Equal(t, "io.containerd."+handler+".v2", r["runtimeType"], handler)
		assert.Equal(t, map[string]any{"ConfigPath": configPath}, r["options"], handler)
	}

	require.NoError(t, f.installer().Uninstall(context.Background()))
	r, err = c.runtime("kata-qemu")
	require.NoError(t, err)
	assert.Equal(t, "/opt/kata/bin/containerd-shim-kata-v2", r["runtimePath"])
	assert.Equal(t, original, f.read("/etc/containerd/config.toml"))
}
