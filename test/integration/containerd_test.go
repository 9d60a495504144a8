package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/standin-shim/standin"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

const (
	// ctrNamespace is where ctr-driven tests run; CRI always uses k8s.io.
	ctrNamespace = "ksg"
	criNamespace = "k8s.io"

	kataRuntime    = "io.containerd.kata.v2"
	standinRuntime = "io.containerd.standin.v2"
)

// containerdOptions shape one private containerd.
type containerdOptions struct {
	// env is added to containerd's environment; shims inherit it.
	env []string
	// criConfigPath, when set, is the kata runtime handler's
	// options.ConfigPath, which CRI sends as runtimeoptions.v1.Options.
	criConfigPath string
	// bins replaces the suite's binaries first on containerd's PATH.
	bins *binaries
	// wrap, when set, changes containerd's command before it starts (e.g.
	// a /dev/log of the test's own, which its shims inherit).
	wrap func(cmd *exec.Cmd)
}

// containerd is a private containerd 1.6 (Debian's) with its own root, state,
// sockets and PATH, our shim and the stand-in first on that PATH.
type containerd struct {
	t            testing.TB
	dir          string
	address      string
	ttrpcAddress string
	logPath      string
	recordDir    string
	bins         *binaries
	cmd          *exec.Cmd
	waitErr      chan error
	crictlBin    string
}

var containerdConfig = template.Must(template.New("config").Parse(`version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{{.Address}}"
[ttrpc]
  address = "{{.TTRPCAddress}}"
[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.Image}}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.Dir}}/cni/bin"
    conf_dir = "{{.Dir}}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "{{.KataRuntime}}"
      pod_annotations = ["io.katacontainers.*"]
      container_annotations = ["io.katacontainers.*"]
{{- if .CRIConfigPath}}
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
        ConfigPath = "{{.CRIConfigPath}}"
{{- end}}
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.standin]
      runtime_type = "{{.StandinRuntime}}"
      pod_annotations = ["io.katacontainers.*"]
      container_annotations = ["io.katacontainers.*"]
{{- if .CRIConfigPath}}
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.standin.options]
        ConfigPath = "{{.CRIConfigPath}}"
{{- end}}
`))

// requireIntegration gates a test on KSG_INTEGRATION=1, root, and the tools the
// harness runs; under CI a missing tool fails the test.
func requireIntegration(t testing.TB) {
	t.Helper()
	testutil.RequiresEnv(t, integrationEnv)
	testutil.RequiresRoot(t)
	for _, c := range []string{"containerd", "ctr", "runc", "busybox"} {
		testutil.RequiresCommand(t, c)
	}
	require.NoError(t, suite.err, "building the shims")
}

// startContainerd starts a private containerd and imports the test image into
// the ctr and CRI namespaces. Everything it started is torn down at cleanup.
func startContainerd(t testing.TB, opts containerdOptions) *containerd {
	t.Helper()
	requireIntegration(t)
	// Short: unix socket paths must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ksg-ctrd-")
	require.NoError(t, err)
	c := &containerd{
		t:            t,
		dir:          dir,
		address:      filepath.Join(dir, "c.sock"),
		ttrpcAddress: filepath.Join(dir, "c.sock.ttrpc"),
		logPath:      filepath.Join(dir, "containerd.log"),
		recordDir:    filepath.Join(dir, "records"),
		bins:         suite.bins,
		waitErr:      make(chan error, 1),
	}
	if opts.bins != nil {
		c.bins = opts.bins
	}
	t.Cleanup(c.teardown)

	var cfg bytes.Buffer
	require.NoError(t, containerdConfig.Execute(&cfg, map[string]string{
		"Dir": dir, "Address": c.address, "TTRPCAddress": c.ttrpcAddress, "Image": testImage,
		"KataRuntime": kataRuntime, "StandinRuntime": standinRuntime, "CRIConfigPath": opts.criConfigPath,
	}))
	cfgPath := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfgPath, cfg.Bytes(), 0o644))
	for _, d := range []string{"cni/bin", "cni/conf", "records"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}

	logf, err := os.Create(c.logPath)
	require.NoError(t, err)
	defer logf.Close()
	c.cmd = exec.Command("containerd", "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append([]string{
		"PATH=" + c.bins.dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + os.Getenv("HOME"),
		standin.RecordDirEnv + "=" + c.recordDir,
	}, opts.env...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if opts.wrap != nil {
		opts.wrap(c.cmd)
	}
	require.NoError(t, c.cmd.Start())
	go func() { c.waitErr <- c.cmd.Wait() }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := c.ctr(ctrNamespace, "version"); err == nil {
			break
		}
		select {
		case err := <-c.waitErr:
			c.waitErr <- err
			t.Fatalf("containerd exited: %v\n%s", err, c.log())
		default:
		}
		require.True(t, time.Now().Before(deadline), "containerd did not come up:\n%s", c.log())
		time.Sleep(50 * time.Millisecond)
	}

	archive := filepath.Join(suite.workDir, "busybox.oci.tar")
	if _, err := os.Stat(archive); err != nil {
		require.NoError(t, writeBusyboxArchive(archive))
	}
	for _, ns := range []string{ctrNamespace, criNamespace} {
		_, stderr, err := c.ctr(ns, "images", "import", archive)
		require.NoError(t, err, stderr)
	}
	return c
}

// ctr runs ctr against this containerd in namespace ns.
func (c *containerd) ctr(ns string, args ...string) (stdout, stderr string, err error) {
	return run(exec.Command("ctr", append([]string{"--address", c.address, "--namespace", ns}, args...)...))
}

func run(cmd *exec.Cmd) (string, string, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// log returns containerd's output so far; shims' logs are copied into it.
func (c *containerd) log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// shimSocket is the path of the socket a runc-style shim (the stand-in, and
// Kata's) creates for sandbox id in namespace ns.
func (c *containerd) shimSocket(ns, id string) string {
	addr, err := shim.SocketAddress(namespaces.WithNamespace(context.Background(), ns), c.address, id)
	require.NoError(c.t, err)
	return strings.TrimPrefix(addr, "unix://")
}

// teardown removes every container, stops containerd, ends shims it left
// running (found by this containerd's unique address on their command line),
// unmounts what is left under the private directories and removes them.
func (c *containerd) teardown() {
	if c.cmd != nil && c.cmd.Process != nil {
		if c.crictlBin != "" {
			_, _, _ = c.crictl("rmp", "--force", "--all")
		}
		for _, ns := range []string{ctrNamespace, criNamespace} {
			out, _, _ := c.ctr(ns, "tasks", "list", "--quiet")
			for _, id := range strings.Fields(out) {
				_, _, _ = c.ctr(ns, "tasks", "kill", "--signal", "SIGKILL", id)
				_, _, _ = c.ctr(ns, "tasks", "delete", "--force", id)
			}
			out, _, _ = c.ctr(ns, "containers", "list", "--quiet")
			for _, id := range strings.Fields(out) {
				_, _, _ = c.ctr(ns, "containers", "delete", id)
			}
		}
		_ = syscall.Kill(c.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-c.waitErr:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.waitErr
		}
	}
	for _, pid := range processesMentioning(c.address) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(c.dir)
	if c.t.Failed() && os.Getenv("KSG_KEEP") != "" {
		c.t.Logf("kept %s", c.dir)
		return
	}
	if err := os.RemoveAll(c.dir); err != nil {
		c.t.Logf("remove %s: %v", c.dir, err)
	}
}

// processesMentioning lists processes whose command line contains s.
func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			fmt.Fprintf(os.Stderr, "unmount %s: %v\n", points[i], err)
		}
	}
}
