package installer

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.WarnLevel)
	os.Exit(m.Run())
}

// kataDeployMain is containerd's config.toml as kata-deploy 4.1.0 leaves it
// on containerd 1.x (no drop-in: runtimes written into the main file), with
// an administrator's comments and runc handler around.
const kataDeployMain = adminConfig + kataDeployHandlers

const adminConfig = `# Administrator's containerd configuration.
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"   # pinned
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

`

// kataDeployHandlers are the runtime tables kata-deploy writes.
const kataDeployHandlers = `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu]
runtime_type = "io.containerd.kata-qemu.v2"
runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"
privileged_without_host_devices = true
pod_annotations = ["io.katacontainers.*"]
container_annotations = ["io.kubernetes.container.terminationMessage*"]

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu.options]
ConfigPath = "/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu-runtime-rs]
runtime_type = "io.containerd.kata-qemu-runtime-rs.v2"
runtime_path = "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"
privileged_without_host_devices = true
pod_annotations = ["io.katacontainers.*"]
container_annotations = ["io.kubernetes.container.terminationMessage*"]

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu-runtime-rs.options]
ConfigPath = "/opt/kata/share/defaults/kata-containers/runtime-rs/runtimes/qemu-runtime-rs/configuration-qemu-runtime-rs.toml"
`

// kataDeployDropIn is kata-deploy's drop-in on containerd 2.x.
const kataDeployDropIn = `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu]
runtime_type = "io.containerd.kata-qemu.v2"
runtime_path = "/opt/kata/bin/containerd-shim-kata-v2"
privileged_without_host_devices = true
pod_annotations = ["io.katacontainers.*"]
container_annotations = ["io.kubernetes.container.terminationMessage*"]

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu.options]
ConfigPath = "/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml"
`

const qemuConfig = `# kata-deploy copy of configuration-qemu.toml
[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinuz.container"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/virtiofsd"]
virtio_fs_extra_args = ["--thread-pool-size=1"]

[agent.kata]

[runtime]
`

const rsConfig = `[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinux-rs.container"
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/virtiofsd"]

[runtime]
hypervisor_name = "qemu"
`

const (
	qemuDir = "/opt/kata/share/defaults/kata-containers/runtimes/qemu"
	rsDir   = "/opt/kata/share/defaults/kata-containers/runtime-rs/runtimes/qemu-runtime-rs"
)

// fakeBzImage is a bzImage whose banner gives version (the verdict comes
// from the version: 6.1.38 is vulnerable, 6.18.35 fixed).
func fakeBzImage(t testing.TB, version string) []byte {
	t.Helper()
	var payload bytes.Buffer
	zw := gzip.NewWriter(&payload)
	_, err := zw.Write([]byte("Linux version " + version + " (kata@build) (gcc) #1 SMP\n"))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	const pm, off = 2 * 512, 64
	b := make([]byte, pm+off)
	b[0x1f1] = 1
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(b[0x20e:], 0x100)
	copy(b[0x300:], version+" (kata@build) #1 SMP\x00")
	binary.LittleEndian.PutUint16(b[0x236:], 1)
	binary.LittleEndian.PutUint32(b[0x248:], off)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(payload.Len()))
	return append(b, payload.Bytes()...)
}

type fixture struct {
	t        *testing.T
	root     string // the host's /
	opt      Options
	restarts int
	api      *fakeAPI
}

// newFixture lays out a host as kata-deploy 4.1.0 leaves it on containerd
// 1.x, with the go qemu shim's kernel kernelGo and runtime-rs's kernelRS.
func newFixture(t *testing.T, kernelGo, kernelRS string) *fixture {
	f := &fixture{t: t, root: t.TempDir(), api: newFakeAPI(t)}
	f.write("/etc/containerd/config.toml", kataDeployMain)
	f.write("/opt/kata/bin/containerd-shim-kata-v2", "kata go shim")
	f.write("/opt/kata/runtime-rs/bin/containerd-shim-kata-v2", "kata rust shim")
	f.write("/opt/kata/libexec/virtiofsd", "virtiofsd")
	f.write(qemuDir+"/configuration-qemu.toml", qemuConfig)
	f.write(qemuDir+"/config.d/10-installation-prefix.toml", "[runtime]\n")
	f.write(rsDir+"/configuration-qemu-runtime-rs.toml", rsConfig)
	f.write("/opt/kata/share/kata-containers/vmlinuz-"+kernelGo, string(fakeBzImage(t, kernelGo)))
	require.NoError(t, os.Symlink("vmlinuz-"+kernelGo, f.abs("/opt/kata/share/kata-containers/vmlinuz.container")))
	f.write("/opt/kata/share/kata-containers/vmlinux-rs-"+kernelRS, string(fakeBzImage(t, kernelRS)))
	// An absolute link, resolved inside the host's root.
	require.NoError(t, os.Symlink("/opt/kata/share/kata-containers/vmlinux-rs-"+kernelRS, f.abs("/opt/kata/share/kata-containers/vmlinux-rs.container")))
	require.NoError(t, os.MkdirAll(f.abs("/etc/kubernetes/node-feature-discovery/features.d"), 0o755))

	art := t.TempDir()
	for _, b := range Binaries {
		require.NoError(t, os.WriteFile(filepath.Join(art, b), []byte("ours: "+b), 0o755))
	}
	f.opt = Options{
		NodeName: "node1", HostRoot: f.root,
		KataPrefix: DefaultKataPrefix, GuardPrefix: DefaultGuardPrefix,
		ContainerdConf: DefaultContainerdConf, RestartCommand: "unused",
		NFDFeaturesDir: DefaultNFDFeaturesDir, ArtifactsDir: art,
		Restart: func(context.Context) error { f.restarts++; return nil },
		Nodes:   f.api.client(),
	}
	return f
}

func (f *fixture) abs(p string) string { return filepath.Join(f.root, p) }

func (f *fixture) write(p, content string) {
	f.t.Helper()
	require.NoError(f.t, os.MkdirAll(filepath.Dir(f.abs(p)), 0o755))
	require.NoError(f.t, os.WriteFile(f.abs(p), []byte(content), 0o644))
}

func (f *fixture) read(p string) string {
	f.t.Helper()
	b, err := os.ReadFile(f.abs(p))
	require.NoError(f.t, err)
	return string(b)
}

func (f *fixture) exists(p string) bool {
	_, err := os.Lstat(f.abs(p))
	return err == nil
}

// snapshot is every file, link and directory of the host with its content
// and mode.
func (f *fixture) snapshot() map[string]string {
	f.t.Helper()
	out := map[string]string{}
	require.NoError(f.t, filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, f.root)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			out[rel] = "link " + target
			return err
		case d.IsDir():
			out[rel] = "dir " + info.Mode().String()
		default:
			b, err := os.ReadFile(p)
			if !utf8.Valid(b) || len(b) > 4096 { // kernels: a digest keeps failures readable
				b = []byte(fmt.Sprintf("sha256:%x", sha256.Sum256(b)))
			}
			out[rel] = info.Mode().String() + " " + string(b)
			return err
		}
		return nil
	}))
	return out
}

func (f *fixture) installer() *Installer { return New(f.opt) }

// fakeAPI is a Kubernetes API server holding one node's labels.
type fakeAPI struct {
	mu      sync.Mutex
	labels  map[string]string
	patches int
	srv     *httptest.Server
	token   string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	a := &fakeAPI{labels: map[string]string{"kubernetes.io/hostname": "node1"}}
	a.token = filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(a.token, []byte("sekret\n"), 0o600))
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/nodes/node1" {
		http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != "Bearer sekret" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
	case http.MethodPatch:
		if r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, "unsupported patch", http.StatusUnsupportedMediaType)
			return
		}
		var p struct {
			Metadata struct {
				Labels map[string]*string `json:"labels"`
			} `json:"metadata"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for k, v := range p.Metadata.Labels {
			if v == nil {
				delete(a.labels, k)
			} else {
				a.labels[k] = *v
			}
		}
		a.patches++
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{"name": "node1", "labels": a.labels}})
}

func (a *fakeAPI) client() *KubeClient {
	return &KubeClient{Base: a.srv.URL, TokenFile: a.token, HTTP: a.srv.Client()}
}

func (a *fakeAPI) get() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for k, v := range a.labels {
		out[k] = v
	}
	return out
}

func (a *fakeAPI) set(k, v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.labels[k] = v
}
