package cluster

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

const (
	// Version is the Kubernetes the harness runs.
	Version = "v1.37.2"
	// NodeName is the one node's name.
	NodeName = "ksg-node"
	// NodeIP is the node's address in the cluster's network namespace
	// (on its loopback device: kubelet refuses a 127/8 node IP). The
	// apiserver listens there, and pods reach it there.
	NodeIP = "10.213.0.1"
	// APIServerPort is the apiserver's port on NodeIP.
	APIServerPort = 6443
	// TestImage is in containerd's k8s.io namespace from the start:
	// /bin/busybox and its applets (testutil.WriteBusyboxImage). It is
	// also CRI's sandbox image, so no registry is needed. Pods use it with
	// imagePullPolicy: Never.
	TestImage = "docker.io/library/ksg-busybox:latest"

	podSubnet      = "10.213.1.0/24"
	serviceSubnet  = "10.0.0.0/24"
	integrationEnv = "KSG_INTEGRATION"
)

// hostMountPoints are host directories kubelet, CNI and Kata's shim write to
// whatever they are configured with (Kata's state, and the guard's default
// state_dir, are under /run/kata-containers and /run/vc); a tmpfs over each,
// in the cluster's mount namespace only, takes those writes. A directory the
// harness had to create as the mount point is removed again.
var hostMountPoints = []string{"/var/lib/cni", "/var/log/containers", "/run/kata-containers", "/run/vc"}

// kernelTunables are the sysctls kubelet sets to these values unless they
// already have them (protectKernelDefaults: true makes it fail instead):
// files holding them are bound over /proc/sys/... in the cluster's mount
// namespace, so kubelet sees them set and the host's stay as they are.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// Options shape a cluster.
type Options struct {
	// ContainerdConfig is where the harness writes containerd's config
	// file; containerd re-reads it on every restart, so a test may have an
	// installer edit it. Default: a file in the cluster's directory.
	ContainerdConfig string
	// ContainerdConfigTail is TOML appended to that file, e.g. the runtime
	// tables kata-deploy adds.
	ContainerdConfigTail string
	// ContainerdEnv is added to containerd's environment; shims inherit it.
	ContainerdEnv []string
	// RuntimePaths names the runtime types (<name> of io.containerd.<name>.v2)
	// whose CRI runtime_path must be honoured. containerd 1.6.20 (Debian
	// 12's) drops runtime_path (see ./runtimepath): on such a containerd the
	// harness puts runtimepath, as containerd-shim-<name>-v2, first on
	// containerd's PATH to run what runtime_path names.
	RuntimePaths []string
}

// Cluster is a running one-node cluster.
type Cluster struct {
	t testing.TB
	// Dir holds everything of the cluster: keys, configs, data, logs.
	Dir string
	// Kubeconfig is the admin's (group system:masters).
	Kubeconfig string
	// ContainerdAddress is containerd's socket (CRI and ctr).
	ContainerdAddress string
	// ContainerdConfig is containerd's config file.
	ContainerdConfig string
	// Syslog collects what the cluster's processes (Kata's shim) send to
	// /dev/log.
	Syslog *testutil.Syslog

	bin     string // the Kubernetes binaries
	holder  *proc  // keeps the namespaces alive
	mntNS   string // the namespaces' identities, as /proc/PID/ns/* read
	opts    Options
	created []string // host mount points the harness created
	// cgroups are the k8s.io cgroups (runc puts CRI's containers under
	// /k8s.io/<id>) that did not exist before the cluster.
	cgroups []string

	mu    sync.Mutex
	procs map[string]*proc
	// restartMu makes restarts one at a time, as systemd's are: a test
	// restarting containerd while the installer asks for a restart must not
	// start two.
	restartMu sync.Mutex
	stop      chan struct{}
	done      chan struct{}
	restarts  atomic.Int32
	serving   bool // serveRestarts runs
}

// proc is one process of the cluster.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	exit chan struct{}
	err  error
}

// binDir returns the directory of the Kubernetes binaries, asking root's
// test/setup/80-kubernetes.sh where its current build is.
func binDir(root string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "test", "setup", "80-kubernetes.sh"), "--print-dir")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}
	return filepath.Join(strings.TrimSpace(string(out)), "bin"), nil
}

// Requires gates t on what a cluster needs: KSG_INTEGRATION=1, root, the
// Kubernetes build and Debian's etcd, containerd, CNI plugins, nsenter and
// ip. It returns the Kubernetes binary directory.
func Requires(t testing.TB) string {
	t.Helper()
	testutil.RequiresEnv(t, integrationEnv)
	testutil.RequiresRoot(t)
	for _, c := range []string{"etcd", "containerd", "ctr", "runc", "nsenter", "ip", "busybox"} {
		testutil.RequiresCommand(t, c)
	}
	_, err := os.Stat("/usr/lib/cni/bridge")
	testutil.Require(t, err == nil, "needs the CNI plugins in /usr/lib/cni (test/setup/80-kubernetes.sh installs containernetworking-plugins)")
	bin, err := binDir(testutil.RepoRoot(t))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	testutil.Require(t, err == nil, msg)
	return bin
}

// Start stands the cluster up and waits until the node is Ready and the
// default service account exists. Everything is torn down when t ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	bin := Requires(t)
	began := time.Now()
	// Short: unix socket paths must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ksg-k8s-")
	require.NoError(t, err)
	c := &Cluster{
		t:                 t,
		Dir:               dir,
		Kubeconfig:        filepath.Join(dir, "admin.kubeconfig"),
		ContainerdAddress: filepath.Join(dir, "containerd.sock"),
		ContainerdConfig:  opts.ContainerdConfig,
		bin:               bin,
		opts:              opts,
		procs:             map[string]*proc{},
		stop:              make(chan struct{}),
		done:              make(chan struct{}),
	}
	if c.ContainerdConfig == "" {
		c.ContainerdConfig = filepath.Join(dir, "containerd.toml")
	}
	t.Cleanup(c.teardown)

	for _, d := range []string{"logs", "etcd", "cni", "cni-ipam", "kubelet/root", "kubelet/pki", "kubelet/pod-logs", "sysctl", "restart", "apiserver"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	require.NoError(t, c.writeConfigs())
	c.installRuntimePathFix()
	c.startNamespaces()
	c.startControlPlane()
	c.startContainerd()
	c.importTestImage()
	c.startKubelet()
	c.serving = true
	go c.serveRestarts()

	c.WaitFor("node "+NodeName+" Ready", 3*time.Minute, func() (bool, string) {
		out, err := c.Kubectl("get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", out
	})
	c.WaitFor("service account default/default", time.Minute, func() (bool, string) {
		out, err := c.Kubectl("get", "serviceaccount", "default", "-o", "name")
		return err == nil, out
	})
	t.Logf("cluster %s up in %s (%s)", Version, time.Since(began).Round(100*time.Millisecond), dir)
	return c
}

// writeConfigs writes keys, tokens, kubeconfigs, kubelet's, containerd's
// and CNI's configs and the kernel tunables' stand-ins.
func (c *Cluster) writeConfigs() error {
	p, err := writePKI(c.Dir, []string{NodeIP, "10.0.0.1", "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	users := []struct{ file, user, groups string }{
		{"admin.kubeconfig", "ksg-admin", "system:masters"},
		{"kubelet.kubeconfig", "system:node:" + NodeName, "system:nodes"},
		{"controller-manager.kubeconfig", "system:kube-controller-manager", "system:masters"},
		{"scheduler.kubeconfig", "system:kube-scheduler", "system:masters"},
	}
	var tokens strings.Builder
	for i, u := range users {
		tok := randomToken()
		fmt.Fprintf(&tokens, "%s,%s,uid-%d,%q\n", tok, u.user, i, u.groups)
		if err := c.writeKubeconfig(filepath.Join(c.Dir, u.file), p.caPEM, tok); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "tokens.csv"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	if err := c.writeContainerdConfig(); err != nil {
		return err
	}
	files := map[string]string{
		"kubelet.yaml":        fmt.Sprintf(kubeletConfig, "unix://"+c.ContainerdAddress, filepath.Join(c.Dir, "kubelet", "pod-logs"), p.caCert, NodeIP),
		"cni/10-ksg.conflist": fmt.Sprintf(cniConfig, podSubnet, filepath.Join(c.Dir, "cni-ipam")),
	}
	for name, v := range kernelTunables {
		files["sysctl/"+strings.ReplaceAll(name, "/", ".")] = v + "\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Cluster) writeKubeconfig(path string, caPEM []byte, token string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ksg
  cluster:
    server: https://%s:%d
    certificate-authority-data: %s
users:
- name: ksg
  user:
    token: %s
contexts:
- name: ksg
  context: {cluster: ksg, user: ksg}
current-context: ksg
`, NodeIP, APIServerPort, base64.StdEncoding.EncodeToString(caPEM), token)), 0o600)
}

// kubeletConfig: cgroup v1 allowed (this host), no QoS cgroups or node
// allocatable (nothing of the host's cgroup tree is changed), and the
// kernel tunables only checked (see kernelTunables). Fields: CRI endpoint,
// pod log directory, client CA, address.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
protectKernelDefaults: true
containerRuntimeEndpoint: %s
podLogsDir: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
localStorageCapacityIsolation: false
`

// cniConfig is a bridge in the cluster's network namespace. Fields: pod
// subnet, IPAM state directory.
const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": "ksg",
  "plugins": [{
    "type": "bridge",
    "bridge": "ksg-cni0",
    "isGateway": true,
    "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]
}
`

var containerdConfig = template.Must(template.New("containerd").Parse(`version = 2
root = "{{.Dir}}/containerd/root"
state = "{{.Dir}}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{{.Address}}"
[ttrpc]
  address = "{{.Address}}.ttrpc"
[debug]
  # Shims log at debug too: our shim's decision on an allowed sandbox.
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.Image}}"
  # Root here lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{.Dir}}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`))

func (c *Cluster) writeContainerdConfig() error {
	var b bytes.Buffer
	if err := containerdConfig.Execute(&b, map[string]string{"Dir": c.Dir, "Address": c.ContainerdAddress, "Image": TestImage}); err != nil {
		return err
	}
	b.WriteString(c.opts.ContainerdConfigTail)
	if err := os.MkdirAll(filepath.Dir(c.ContainerdConfig), 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.ContainerdConfig, b.Bytes(), 0o644)
}

// holderScript runs first in the new namespaces and then holds them: the
// node address, the tmpfs mounts and the kernel tunables' stand-ins, then
// "ready". Arguments: the cluster directory, then the host mount points.
const holderScript = `set -e
dir=$1
shift
ip link set lo up
ip addr add ` + NodeIP + `/32 dev lo
# etcd fsyncs: on tmpfs a loaded disk does not slow the control plane.
mount -t tmpfs -o size=1g ksg-etcd "$dir/etcd"
for d in "$@"; do mount -t tmpfs -o mode=0755 ksg-k8s "$d"; done
for f in "$dir"/sysctl/*; do
	n=${f##*/}
	mount --bind "$f" "/proc/sys/$(echo "$n" | tr . /)"
done
echo ready
exec sleep infinity
`

// startNamespaces starts the holder: a new network and mount namespace with
// the test's own /dev/log, which every other process of the cluster enters.
func (c *Cluster) startNamespaces() {
	t := c.t
	all, _ := filepath.Glob("/sys/fs/cgroup/*/")
	for _, h := range all {
		if _, err := os.Stat(filepath.Join(h, "k8s.io")); errors.Is(err, os.ErrNotExist) {
			c.cgroups = append(c.cgroups, filepath.Join(h, "k8s.io"))
		}
	}
	for _, d := range hostMountPoints {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			require.NoError(t, os.MkdirAll(d, 0o755))
			c.created = append(c.created, d)
		}
	}
	cmd := exec.Command("bash", append([]string{"-c", holderScript, "ksg-k8s-holder", c.Dir}, hostMountPoints...)...)
	// Not t.TempDir: the socket path must stay short.
	sdir, err := os.MkdirTemp("", "ksg-syslog-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sdir) })
	c.Syslog, err = testutil.ListenSyslog(filepath.Join(sdir, "log"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Syslog.Close() })
	require.NoError(t, c.Syslog.Wrap(cmd))
	cmd.SysProcAttr.Unshareflags |= syscall.CLONE_NEWNET
	cmd.SysProcAttr.Setpgid = true
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	c.holder, err = c.startCmd("holder", cmd)
	require.NoError(t, err)
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		require.Equal(t, "ready\n", line, "namespace setup failed:\n%s", c.Log("holder"))
	case <-time.After(30 * time.Second):
		t.Fatalf("namespace setup hangs:\n%s", c.Log("holder"))
	}
	c.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", c.holder.cmd.Process.Pid))
	require.NoError(t, err)
}

// inNamespaces is argv run in the cluster's namespaces.
func (c *Cluster) inNamespaces(argv ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(c.holder.cmd.Process.Pid), "--mount", "--net", "--"}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + c.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// startCmd starts cmd with its output in logs/<name>.log and registers it.
// It does not use c.t: the restart server calls it too.
func (c *Cluster) startCmd(name string, cmd *exec.Cmd) (*proc, error) {
	p := &proc{name: name, cmd: cmd, log: filepath.Join(c.Dir, "logs", name+".log"), exit: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exit)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p, nil
}

// run starts argv in the namespaces as the cluster's process name.
func (c *Cluster) run(name string, argv ...string) *proc {
	p, err := c.startCmd(name, c.inNamespaces(argv...))
	require.NoError(c.t, err)
	return p
}

func (c *Cluster) startControlPlane() {
	d := c.Dir
	c.run("etcd", "etcd", "--name", "ksg", "--data-dir", filepath.Join(d, "etcd", "data"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "ksg=http://127.0.0.1:2380", "--logger", "zap", "--log-level", "warn")
	c.run("kube-apiserver", filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", NodeIP, "--advertise-address", NodeIP, "--secure-port", strconv.Itoa(APIServerPort),
		"--cert-dir", filepath.Join(d, "apiserver"),
		"--tls-cert-file", filepath.Join(d, "apiserver.crt"), "--tls-private-key-file", filepath.Join(d, "apiserver.key"),
		"--client-ca-file", filepath.Join(d, "ca.crt"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(d, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(d, "sa.key"),
		"--service-cluster-ip-range", serviceSubnet,
		"--token-auth-file", filepath.Join(d, "tokens.csv"),
		"--authorization-mode", "Node,RBAC",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false", "--profiling=false")
	c.WaitFor("kube-apiserver ready", 2*time.Minute, func() (bool, string) {
		out, err := c.Kubectl("get", "--raw", "/readyz")
		return err == nil && out == "ok", out
	})
	c.run("kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig", filepath.Join(d, "controller-manager.kubeconfig"),
		"--leader-elect=false", "--bind-address", "127.0.0.1",
		"--root-ca-file", filepath.Join(d, "ca.crt"),
		"--service-account-private-key-file", filepath.Join(d, "sa.key"),
		"--use-service-account-credentials=false", "--profiling=false")
	c.run("kube-scheduler", filepath.Join(c.bin, "kube-scheduler"),
		"--kubeconfig", filepath.Join(d, "scheduler.kubeconfig"),
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--profiling=false")
}

// containerdCmd is containerd as the harness runs it.
func (c *Cluster) containerdCmd() *exec.Cmd {
	cmd := c.inNamespaces("containerd", "--config", c.ContainerdConfig)
	cmd.Env = append([]string{
		"PATH=" + filepath.Join(c.Dir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + c.Dir,
		runtimePathConfigEnv + "=" + c.ContainerdConfig,
	}, c.opts.ContainerdEnv...)
	return cmd
}

// runtimePathConfigEnv is runtimepath's ConfigEnv.
const runtimePathConfigEnv = "KSG_CONTAINERD_CONFIG"

// droppedRuntimePath matches the containerd releases whose client drops
// CRI's runtime_path: 1.6.0 to 1.6.20 (fixed in 1.6.21 by f49254f0b).
var droppedRuntimePath = regexp.MustCompile(` v?1\.6\.([0-9]|1[0-9]|20)[~+ -]`)

// installRuntimePathFix links runtimepath under the shim names of
// Options.RuntimePaths into <dir>/bin, first on containerd's PATH, when
// this containerd drops runtime_path.
func (c *Cluster) installRuntimePathFix() {
	t := c.t
	require.NoError(t, os.MkdirAll(filepath.Join(c.Dir, "bin"), 0o755))
	if len(c.opts.RuntimePaths) == 0 {
		return
	}
	version, err := exec.Command("containerd", "--version").Output()
	require.NoError(t, err)
	if !droppedRuntimePath.Match(version) {
		return
	}
	root := testutil.RepoRoot(t)
	bin := filepath.Join(c.Dir, "bin", "runtimepath")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/k8s/cluster/runtimepath")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build runtimepath: %s", out)
	for _, name := range c.opts.RuntimePaths {
		require.NoError(t, os.Symlink("runtimepath", filepath.Join(c.Dir, "bin", "containerd-shim-"+name+"-v2")))
	}
	t.Logf("%s: CRI runtime_path of %v honoured by test/k8s/cluster/runtimepath", strings.TrimSpace(string(version)), c.opts.RuntimePaths)
}

func (c *Cluster) startContainerd() {
	p, err := c.startCmd("containerd", c.containerdCmd())
	require.NoError(c.t, err)
	c.WaitFor("containerd up", 30*time.Second, func() (bool, string) {
		select {
		case <-p.exit:
			c.t.Fatalf("containerd exited: %v\n%s", p.err, c.Log("containerd"))
		default:
		}
		_, err := c.Ctr("version")
		return err == nil, fmt.Sprint(err)
	})
}

func (c *Cluster) importTestImage() {
	archive := filepath.Join(c.Dir, "busybox.oci.tar")
	require.NoError(c.t, testutil.WriteBusyboxImage(archive, TestImage))
	out, err := c.Ctr("images", "import", archive)
	require.NoError(c.t, err, out)
}

func (c *Cluster) startKubelet() {
	d := c.Dir
	c.run("kubelet", filepath.Join(c.bin, "kubelet"),
		"--config", filepath.Join(d, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(d, "kubelet.kubeconfig"),
		"--root-dir", filepath.Join(d, "kubelet", "root"),
		"--cert-dir", filepath.Join(d, "kubelet", "pki"),
		"--hostname-override", NodeName, "--node-ip", NodeIP)
}

// Kubectl runs kubectl as the admin in the cluster's network namespace and
// returns its trimmed stdout; an error carries stderr.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return c.KubectlStdin(nil, args...)
}

// KubectlStdin is Kubectl with stdin.
func (c *Cluster) KubectlStdin(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(c.holder.cmd.Process.Pid), "--net", "--",
		filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(out.String()), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Apply applies manifest, failing the test on error.
func (c *Cluster) Apply(manifest string) {
	c.t.Helper()
	out, err := c.KubectlStdin(strings.NewReader(manifest), "apply", "-f", "-")
	require.NoError(c.t, err, out)
}

// Ctr runs ctr against the cluster's containerd in the k8s.io namespace
// and returns its combined output.
func (c *Cluster) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", c.ContainerdAddress, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// Log returns what the cluster's process name (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet, holder)
// wrote so far; shims' logs are in containerd's.
func (c *Cluster) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
	return string(b)
}

// WaitFor polls cond every 250 ms until it holds, failing the test after
// timeout with what and cond's last note.
func (c *Cluster) WaitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, note := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, note)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// RestartContainerd stops containerd and starts it again with the config
// file as it is now, as a node's `systemctl restart containerd` does:
// running containers and their shims go on.
func (c *Cluster) RestartContainerd() error {
	c.restartMu.Lock()
	defer c.restartMu.Unlock()
	c.mu.Lock()
	p := c.procs["containerd"]
	c.mu.Unlock()
	if err := stopProc(p, 20*time.Second); err != nil {
		return err
	}
	p, err := c.startCmd("containerd", c.containerdCmd())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Ctr("version"); err == nil {
			return nil
		}
		select {
		case <-p.exit:
			return fmt.Errorf("containerd exited after restart: %v (log %s)", p.err, p.log)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not up 30 s after restart (log %s)", p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RestartCommand is a shell command that, run by anyone who sees the
// host's /tmp (a DaemonSet chrooted into the host), has the harness restart
// containerd and exits 0 once it is up again: a CONTAINERD_RESTART_COMMAND.
func (c *Cluster) RestartCommand() string {
	return "sh " + filepath.Join(c.Dir, "restart-containerd.sh")
}

// restartScript files a request in dir and waits up to 60 s for the
// harness's answer ("ok" or the error).
const restartScript = `#!/bin/sh
# Asks the test harness to restart its containerd (see cluster.RestartCommand).
req=%s/$$-$(date +%%s%%N)
: >"$req.req"
i=0
while [ ! -e "$req.done" ]; do
	i=$((i+1))
	if [ "$i" -gt 600 ]; then rm -f "$req.req"; echo "the test harness did not restart containerd" >&2; exit 1; fi
	sleep 0.1
done
answer=$(cat "$req.done")
rm -f "$req.done"
[ "$answer" = ok ] || { echo "restarting containerd: $answer" >&2; exit 1; }
`

// Restarts is how many times RestartCommand restarted containerd.
func (c *Cluster) Restarts() int { return int(c.restarts.Load()) }

// serveRestarts answers restart requests until teardown.
func (c *Cluster) serveRestarts() {
	defer close(c.done)
	dir := filepath.Join(c.Dir, "restart")
	if err := os.WriteFile(filepath.Join(c.Dir, "restart-containerd.sh"), []byte(fmt.Sprintf(restartScript, dir)), 0o755); err != nil {
		c.t.Errorf("restart script: %v", err)
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		reqs, _ := filepath.Glob(filepath.Join(dir, "*.req"))
		for _, r := range reqs {
			answer := "ok"
			if err := c.RestartContainerd(); err != nil {
				answer = err.Error()
			}
			c.restarts.Add(1)
			base := strings.TrimSuffix(r, ".req")
			_ = os.WriteFile(base+".done.tmp", []byte(answer), 0o644)
			_ = os.Rename(base+".done.tmp", base+".done")
			_ = os.Remove(r)
		}
	}
}

// stopProc sends SIGTERM, then SIGKILL after grace, and waits.
func stopProc(p *proc, grace time.Duration) error {
	if p == nil || p.cmd.Process == nil {
		return nil
	}
	select {
	case <-p.exit:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exit:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) does not die", p.name, p.cmd.Process.Pid)
	}
}

// teardown: kubelet first (it would restart pods), then every pod and
// container through containerd, then containerd, the control plane, any
// process left in the namespaces (shims), and last the holder, which ends
// the namespaces and so every mount in them.
func (c *Cluster) teardown() {
	t := c.t
	if c.holder == nil {
		os.RemoveAll(c.Dir)
		return
	}
	close(c.stop)
	if c.serving {
		<-c.done
	}
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	_ = stopProc(procs["kubelet"], 10*time.Second)
	if p := procs["containerd"]; p != nil {
		select {
		case <-p.exit:
		default:
			c.removeAllContainers()
		}
	}
	for _, name := range []string{"containerd", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		if err := stopProc(procs[name], 10*time.Second); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
	// Shims and what they started; wait until they are gone, so that the
	// namespaces end with the holder.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []int
		for _, pid := range c.processesInNamespaces() {
			if pid != c.holder.cmd.Process.Pid {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("teardown: processes %v in the cluster's namespaces do not die", left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stopProc(c.holder, time.Second); err != nil {
		t.Errorf("teardown: %v", err)
	}
	for i := len(c.created) - 1; i >= 0; i-- {
		// Not empty: something outside the cluster uses it now.
		if err := os.Remove(c.created[i]); err != nil && !errors.Is(err, syscall.ENOTEMPTY) {
			t.Errorf("teardown: %v", err)
		}
	}
	for _, cg := range c.cgroups {
		// Busy or not empty: another CRI's containers use it now.
		_ = os.Remove(cg)
	}
	if t.Failed() {
		for _, name := range []string{"kubelet", "containerd", "kube-apiserver", "kube-controller-manager", "holder"} {
			t.Logf("--- last of %s's log:\n%s", name, tail(c.Log(name), 40))
		}
		if os.Getenv("KSG_KEEP") != "" {
			t.Logf("kept %s", c.Dir)
			return
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Errorf("teardown: %v", err)
	}
}

// removeAllContainers removes every CRI pod (crictl, when test/setup built
// it), then kills and deletes any task and container left in k8s.io, so no
// container outlives the cluster and runc removes their cgroups.
func (c *Cluster) removeAllContainers() {
	if crictl := filepath.Join(testutil.CacheDir(), "bin", "crictl"); fileExists(crictl) {
		ep := "unix://" + c.ContainerdAddress
		_ = exec.Command(crictl, "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s", "rmp", "--force", "--all").Run()
	}
	out, _ := c.Ctr("tasks", "list", "--quiet")
	for _, id := range strings.Fields(out) {
		_, _ = c.Ctr("tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = c.Ctr("tasks", "delete", "--force", id)
	}
	out, _ = c.Ctr("containers", "list", "--quiet")
	for _, id := range strings.Fields(out) {
		_, _ = c.Ctr("containers", "delete", id)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// processesInNamespaces lists the processes in the cluster's mount
// namespace (the holder, what entered it, and what those started, such as
// shims; containers have namespaces of their own).
func (c *Cluster) processesInNamespaces() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == c.mntNS {
			pids = append(pids, pid)
		}
	}
	return pids
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
