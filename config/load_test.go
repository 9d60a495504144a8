package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

func TestDropInMerge(t *testing.T) {
	dir := t.TempDir()
	k1 := writeFile(t, dir, "k1", "x")
	k2 := writeFile(t, dir, "k2", "x")
	k3 := writeFile(t, dir, "k3", "x")
	main := writeFile(t, dir, "configuration.toml", qemuConfig(k1)+"\n[submount_guard]\non_vulnerable = \"warn\"\nfixed_releases = [\"6.1.0-1\"]\n")
	// Lexical order: 10 before 20 before 9x; the last to set a key wins.
	writeFile(t, dir, "config.d/20-kernel.toml", "[hypervisor.qemu]\nkernel = \""+k3+"\"\n")
	writeFile(t, dir, "config.d/10-kernel.toml", "[hypervisor.qemu]\nkernel = \""+k2+"\"\nvirtio_fs_extra_args = [\"--thread-pool-size=4\"]\n")
	writeFile(t, dir, "config.d/30-guard.toml", "[submount_guard]\non_unknown = \"refuse\"\nfixed_releases = []\n")
	// A header alone creates no table; an unknown key sets nothing.
	writeFile(t, dir, "config.d/40-empty.toml", "[hypervisor.clh]\n[hypervisor.qemu]\nno_such_key = 1\n[runtime]\nenable_debug = false\n")

	f, err := Load(main)
	require.NoError(t, err)
	require.Equal(t, []string{
		filepath.Join(dir, "config.d/10-kernel.toml"), filepath.Join(dir, "config.d/20-kernel.toml"),
		filepath.Join(dir, "config.d/30-guard.toml"), filepath.Join(dir, "config.d/40-empty.toml"),
	}, f.DropIns)
	require.Len(t, f.Hypervisors, 1)
	q := f.Hypervisors["qemu"]
	require.Equal(t, k3, q.Kernel)
	// Arrays are replaced, not appended.
	require.Equal(t, []string{"--thread-pool-size=4"}, q.VirtioFSExtraArgs)
	// Keys no drop-in touches survive.
	require.Equal(t, "/opt/kata/libexec/virtiofsd", q.VirtioFSDaemon)
	require.Equal(t, "auto", q.VirtioFSCache)
	require.False(t, f.Runtime.Debug)
	require.Equal(t, PolicyWarn, f.Guard.OnVulnerable)
	require.Equal(t, PolicyRefuse, f.Guard.OnUnknown)
	require.Equal(t, []string{}, f.Guard.FixedReleases)
}

func TestDropInAddsTable(t *testing.T) {
	dir := t.TempDir()
	k := writeFile(t, dir, "k", "x")
	main := writeFile(t, dir, "configuration.toml", qemuConfig(k))
	writeFile(t, dir, "config.d/50-clh.toml", "[hypervisor.clh]\nkernel = \""+k+"\"\nvirtio_fs_daemon = \"/usr/libexec/virtiofsd\"\n")
	r, err := Resolve(context.Background(), Sources{ExplicitPath: main})
	require.NoError(t, err)
	require.True(t, r.Ambiguous())
	require.Equal(t, "clh", r.HypervisorName)
	require.Equal(t, []string{"clh", "qemu"}, []string{r.Hypervisors[0].Name, r.Hypervisors[1].Name})
	// clh keeps virtio_fs_cache as set (empty); qemu defaults it to "never"
	// only when unset.
	require.Equal(t, "", r.Hypervisors[0].Config.VirtioFSCache)
	require.Equal(t, "auto", r.Hypervisors[1].Config.VirtioFSCache)
}

func TestDropInErrors(t *testing.T) {
	cases := []struct {
		name  string
		entry string // relative to config.d
		body  string
		dir   bool
		msg   string
	}{
		{"not toml", "README", "This directory holds drop-ins.\n", false, "config.d/README:1:6: invalid TOML: expected '.' or '=', but got 'd' instead"},
		{"directory entry", "sub", "", true, "config.d/sub is a directory, not a TOML file: invalid argument"},
		{"bad guard value names the drop-in", "90-guard.toml", "[submount_guard]\non_unknown = \"maybe\"\n", false,
			`config.d/90-guard.toml: [submount_guard] on_unknown = "maybe": invalid value; allowed: refuse, warn, off`},
		{"unknown hypervisor table names the drop-in", "90-fc.toml", "[hypervisor.fc]\nkernel = \"/k\"\n", false,
			"config.d/90-fc.toml: [hypervisor.fc]: unknown hypervisor table (Kata refuses it too); Firecracker's table is [hypervisor.firecracker]; allowed: qemu, clh, firecracker, dragonball, stratovirt, remote: invalid argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			k := writeFile(t, dir, "k", "x")
			main := writeFile(t, dir, "configuration.toml", qemuConfig(k))
			if tc.dir {
				require.NoError(t, os.MkdirAll(filepath.Join(dir, "config.d", tc.entry), 0o755))
			} else {
				writeFile(t, dir, "config.d/"+tc.entry, tc.body)
			}
			_, err := Load(main)
			require.Error(t, err)
			require.True(t, errdefs.IsInvalidArgument(err), err)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestTOMLErrors(t *testing.T) {
	cases := []struct {
		name string
		body string
		msg  string
	}{
		{"unterminated array", "[hypervisor.qemu]\nkernel = \"/k\"\nenable_annotations = [\n", "cfg.toml:3:23: invalid TOML: unexpected EOF; expected value (last key \"hypervisor.qemu.enable_annotations\")"},
		{"duplicate table", "[hypervisor.qemu]\nkernel = \"/k\"\n[hypervisor.qemu]\n", "cfg.toml:3:2: invalid TOML: Key 'hypervisor.qemu' has already been defined. (last key \"hypervisor\")"},
		{"bad string", "[runtime]\nenable_debug = tru\n", "cfg.toml:2:16: invalid TOML: expected value but found \"tru\" instead (last key \"runtime.enable_debug\")"},
		{"wrong type", "[hypervisor.qemu]\nkernel = 1\n", "cfg.toml:2: invalid TOML: hypervisor.qemu.kernel: incompatible types: TOML value has type int64; destination has type string"},
		{"wrong array type", "[hypervisor.qemu]\nenable_annotations = \"kernel\"\n", "cfg.toml:2: invalid TOML: hypervisor.qemu.enable_annotations: incompatible types: TOML value has type string; destination has type slice"},
		{"out of range", "[hypervisor.qemu]\nmsize_9p = -1\n", "cfg.toml:2:12: invalid TOML: -1 is out of range for uint32 (last key \"hypervisor.qemu.msize_9p\")"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse("cfg.toml", []byte(tc.body))
			require.Error(t, err)
			require.True(t, errdefs.IsInvalidArgument(err), err)
			require.Equal(t, tc.msg, err.Error())
		})
	}
}

func TestGuard(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		f, err := parse("c.toml", []byte(qemuConfig("/k")))
		require.NoError(t, err)
		require.Equal(t, defaultGuard(), f.Guard)
		require.Equal(t, statedir.Default, f.Guard.StateDir)
	})
	t.Run("all keys", func(t *testing.T) {
		f, err := parse("c.toml", []byte(`[submount_guard]
on_vulnerable = "refuse"
on_unknown = "off"
virtiofs_protection = "none"
fixed_releases = ["6.1.0-18-amd64", "5.15.0-91-generic"]
delegate_shim = "/usr/local/bin/containerd-shim-kata-v2.real"
delegate_kind = "runtime-rs"
delegate_runtime = "/usr/local/bin//kata-runtime.real"
upstream_virtiofsd = "/usr/libexec/virtiofsd/"
state_dir = "/var/run/ksg"
`))
		require.NoError(t, err)
		require.Equal(t, Guard{
			OnVulnerable: PolicyRefuse, OnUnknown: PolicyOff, VirtiofsProtection: protection.None,
			FixedReleases: []string{"6.1.0-18-amd64", "5.15.0-91-generic"},
			DelegateShim:  "/usr/local/bin/containerd-shim-kata-v2.real", DelegateKind: DelegateRuntimeRS,
			DelegateRuntime: "/usr/local/bin/kata-runtime.real", UpstreamVirtiofsd: "/usr/libexec/virtiofsd", StateDir: "/var/run/ksg",
		}, f.Guard)
	})
	bad := []struct {
		name string
		body string
		msg  string
	}{
		{"bad policy word", `on_vulnerable = "block"`, `c.toml: [submount_guard] on_vulnerable = "block": invalid value; allowed: refuse, warn, off`},
		{"policy wrong type", `on_unknown = true`, `c.toml: [submount_guard] on_unknown = true: invalid value; allowed: refuse, warn, off`},
		{"bad delegate kind", `delegate_kind = "go"`, `c.toml: [submount_guard] delegate_kind = "go": which Kata shim delegate_shim is; auto asks its --version; allowed: auto, go-3, go-4, runtime-rs`},
		{"policy case", `on_unknown = "Warn"`, `c.toml: [submount_guard] on_unknown = "Warn": invalid value; allowed: refuse, warn, off`},
		{"bad protection", `virtiofs_protection = "off"`, `c.toml: [submount_guard] virtiofs_protection = "off": invalid value; allowed: recover, no-submounts, none`},
		{"releases not array", `fixed_releases = "6.1.0"`, `c.toml: [submount_guard] fixed_releases = "6.1.0": want an array of kernel release strings (uname -r)`},
		{"release not string", `fixed_releases = ["6.1.0", 6]`, `c.toml: [submount_guard] fixed_releases = ["6.1.0", 6]: each entry must be one non-empty kernel release (uname -r), such as "6.1.0-18-amd64"`},
		{"empty release", `fixed_releases = [""]`, `c.toml: [submount_guard] fixed_releases = [""]: each entry must be one non-empty kernel release (uname -r), such as "6.1.0-18-amd64"`},
		{"relative path", `state_dir = "run/ksg"`, `c.toml: [submount_guard] state_dir = "run/ksg": want an absolute path`},
		{"empty path", `delegate_shim = ""`, `c.toml: [submount_guard] delegate_shim = "": want an absolute path`},
		{"unknown key", `on_vulnerables = "warn"`, `c.toml: [submount_guard] on_vulnerables = "warn": unknown key; allowed: on_vulnerable, on_unknown, virtiofs_protection, fixed_releases, delegate_shim, delegate_kind, delegate_runtime, upstream_virtiofsd, state_dir`},
		{"relative delegate runtime", `delegate_runtime = "kata-runtime"`, `c.toml: [submount_guard] delegate_runtime = "kata-runtime": want an absolute path`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse("c.toml", []byte("[submount_guard]\n"+tc.body+"\n"))
			require.Error(t, err)
			require.True(t, errdefs.IsInvalidArgument(err), err)
			require.Equal(t, tc.msg, err.Error())
		})
	}
	t.Run("not a table", func(t *testing.T) {
		_, err := parse("c.toml", []byte("submount_guard = 3\n"))
		require.EqualError(t, err, `c.toml: [submount_guard] (table) = "Integer": [submount_guard] must be a table`)
	})
}

// TestDelegateRuntimeCandidates: Kata's kata-runtime is delegate_runtime, or
// looked for beside delegate_shim, renamed like it first.
func TestDelegateRuntimeCandidates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		shim    string
		runtime string
		want    []string
	}{
		{"default: the renamed shim of the install steps", DefaultDelegateShim, "",
			[]string{"/opt/kata/bin/kata-runtime.upstream", "/opt/kata/bin/kata-runtime"}},
		{"shim not renamed", "/usr/bin/containerd-shim-kata-v2", "", []string{"/usr/bin/kata-runtime"}},
		{"shim renamed otherwise", "/usr/local/bin/containerd-shim-kata-v2.real", "", []string{"/usr/local/bin/kata-runtime"}},
		{"set: only that", DefaultDelegateShim, "/usr/local/bin/kata-runtime.real", []string{"/usr/local/bin/kata-runtime.real"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := defaultGuard()
			g.DelegateShim, g.DelegateRuntime = tc.shim, tc.runtime
			require.Equal(t, tc.want, g.DelegateRuntimeCandidates())
		})
	}
}

func TestUnknownTablesAndKeysIgnored(t *testing.T) {
	f, err := parse("c.toml", []byte(qemuConfig("/k")+`
[factory]
enable_template = false
[image]
service_offload = true
[hypervisor.qemu.extra]
whatever = 1
`))
	require.NoError(t, err)
	require.Equal(t, "/k", f.Hypervisors["qemu"].Kernel)
}

func TestHypervisorTables(t *testing.T) {
	dir := t.TempDir()
	k := writeFile(t, dir, "vmlinux", "x")
	img := writeFile(t, dir, "kata.img", "x")
	cases := []struct {
		name   string
		body   string
		check  func(t *testing.T, r *Resolved)
		msg    string
		errIs  func(error) bool
		active string
	}{
		{name: "qemu defaults shared_fs and cache", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nvirtio_fs_daemon = \"/v\"\n",
			check: func(t *testing.T, r *Resolved) {
				require.Equal(t, SharedFSVirtioFS, r.Hypervisor.SharedFS)
				require.Equal(t, "never", r.Hypervisor.VirtioFSCache)
				require.True(t, r.Hypervisor.IsVirtioFS())
			}},
		{name: "firecracker has no shared fs", body: "[hypervisor.firecracker]\nkernel = \"" + k + "\"\nimage = \"" + img + "\"\nshared_fs = \"virtio-fs\"\n",
			check: func(t *testing.T, r *Resolved) {
				require.Equal(t, "firecracker", r.HypervisorName)
				require.False(t, r.Hypervisor.IsVirtioFS())
				require.Equal(t, img, r.Hypervisor.Image)
			}},
		{name: "remote boots nothing here", body: "[hypervisor.remote]\nkernel = \"/nonexistent\"\n",
			check: func(t *testing.T, r *Resolved) { require.Equal(t, SharedFSNone, r.Hypervisor.SharedFS) }},
		{name: "qemu 9p", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nshared_fs = \"virtio-9p\"\n",
			check: func(t *testing.T, r *Resolved) { require.False(t, r.Hypervisor.IsVirtioFS()) }},
		{name: "clh rejects 9p", body: "[hypervisor.clh]\nkernel = \"" + k + "\"\nshared_fs = \"virtio-9p\"\n",
			msg: `[hypervisor.clh] shared_fs = "virtio-9p": not supported by clh; allowed: virtio-fs, virtio-fs-nydus, none`},
		{name: "bad shared_fs", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nshared_fs = \"nfs\"\n",
			msg: `[hypervisor.qemu] shared_fs = "nfs": not supported by qemu; allowed: virtio-9p, virtio-fs, virtio-fs-nydus, none`},
		{name: "virtio-fs without daemon", body: "[hypervisor.stratovirt]\nkernel = \"" + k + "\"\n",
			msg: `[hypervisor.stratovirt] virtio_fs_daemon = "": shared_fs virtio-fs needs a daemon path (Kata refuses this too)`},
		{name: "missing kernel", body: "[hypervisor.qemu]\nkernel = \"" + dir + "/nope\"\nvirtio_fs_daemon = \"/v\"\n",
			msg: `[hypervisor.qemu] kernel = "` + dir + `/nope": file ` + dir + `/nope does not exist: not found`, errIs: errdefs.IsNotFound},
		{name: "missing image", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nimage = \"/no/image\"\nvirtio_fs_daemon = \"/v\"\n",
			msg: `[hypervisor.qemu] image = "/no/image": file /no/image does not exist: not found`, errIs: errdefs.IsNotFound},
		{name: "no table", body: "[runtime]\nenable_debug = true\n",
			msg: "has no [hypervisor.<name>] table (one of qemu, clh, firecracker, dragonball, stratovirt, remote): Kata would boot its built-in defaults; add the table of the hypervisor you use: invalid argument"},
		{name: "acrn is gone", body: "[hypervisor.acrn]\nkernel = \"" + k + "\"\n",
			msg: "[hypervisor.acrn]: unknown hypervisor table (Kata refuses it too); allowed: qemu, clh, firecracker, dragonball, stratovirt, remote: invalid argument"},
		{name: "two tables", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nvirtio_fs_daemon = \"/v\"\n[hypervisor.clh]\nkernel = \"" + k + "\"\nvirtio_fs_daemon = \"/w\"\n",
			check: func(t *testing.T, r *Resolved) {
				require.True(t, r.Ambiguous())
				require.Equal(t, "clh", r.HypervisorName)
				require.Equal(t, "/w", r.Hypervisor.VirtioFSDaemon)
				require.Equal(t, "/v", r.Hypervisors[1].Config.VirtioFSDaemon)
			}},
		{name: "two tables, one invalid", body: "[hypervisor.qemu]\nkernel = \"" + k + "\"\nvirtio_fs_daemon = \"/v\"\n[hypervisor.clh]\nkernel = \"/missing\"\n",
			msg: `[hypervisor.clh] kernel = "/missing": file /missing does not exist`, errIs: errdefs.IsNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "configuration.toml", tc.body)
			r, err := Resolve(context.Background(), Sources{ExplicitPath: p})
			if tc.msg != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tc.msg)
				require.Contains(t, err.Error(), p)
				is := tc.errIs
				if is == nil {
					is = errdefs.IsInvalidArgument
				}
				require.True(t, is(err), err)
				return
			}
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

func TestDefaultKernel(t *testing.T) {
	require.Equal(t, "/opt/kata/share/kata-containers/vmlinuz.container", defaultKernel("/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"))
	require.Equal(t, "/usr/share/kata-containers/vmlinuz.container", defaultKernel("/usr/share/defaults/kata-containers/configuration.toml"))
	_, err := effective(&File{Path: "/etc/kata-containers/configuration.toml"}, DelegateGo3, "never", "qemu", Hypervisor{VirtioFSDaemon: "/v"})
	if _, statErr := os.Stat("/usr/share/kata-containers/vmlinuz.container"); statErr != nil {
		require.ErrorContains(t, err, `kernel = "/usr/share/kata-containers/vmlinuz.container": file /usr/share/kata-containers/vmlinuz.container does not exist`)
	}
}
