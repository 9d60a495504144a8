package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// runtime-rs cannot be built here (its crates are not reachable), so its
// rules are encoded from the 4.1.0 source in ../shared/upstream
// (kata-containers-4.1.0-runtime-rs-deploy.tar.gz), each case citing the
// lines it follows.

// rsConfig is a runtime-rs configuration whose [runtime] hypervisor_name is
// name and which has a qemu and a dragonball table.
func rsConfig(dir, name, enable string) string {
	return fmt.Sprintf(`[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = %q
shared_fs = "virtio-fs"
virtio_fs_daemon = %q
valid_virtio_fs_daemon_paths = [%q]
virtio_fs_extra_args = ["--thread-pool-size=1", "-o", "announce_submounts"]
enable_annotations = [%s]

[hypervisor.dragonball]
kernel = %q
shared_fs = "inline-virtio-fs"

[runtime]
name = "virt_container"
hypervisor_name = %q
`, filepath.Join(dir, "vmlinux-qemu"), filepath.Join(dir, "daemon-link"), filepath.Join(dir, "kata-*"), enable,
		filepath.Join(dir, "vmlinux-db"), name)
}

func TestResolveRuntimeRS(t *testing.T) {
	rs := func(dir string, s Sources) Sources {
		s.Delegate = DelegateRuntimeRS
		s.RuntimeRSDefaultPaths = []string{filepath.Join(dir, "etc/runtime-rs/configuration.toml"), filepath.Join(dir, "share/runtime-rs/configuration.toml")}
		return s
	}
	setup := func(t *testing.T) string {
		dir := t.TempDir()
		for _, f := range []string{"vmlinux-qemu", "vmlinux-db"} {
			writeFile(t, dir, f, "")
		}
		daemon := writeFile(t, dir, "kata-virtiofsd", "")
		require.NoError(t, os.Symlink(daemon, filepath.Join(dir, "daemon-link")))
		return dir
	}

	t.Run("[runtime] hypervisor_name picks the table (kata-types src/annotations/mod.rs:504-530)", func(t *testing.T) {
		dir := setup(t)
		p := writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "qemu", ""))
		r, err := Resolve(context.Background(), rs(dir, Sources{}))
		require.NoError(t, err)
		require.Equal(t, p, r.Path)
		require.Equal(t, SourceDefault, r.Source)
		require.Equal(t, "qemu", r.HypervisorName)
		require.False(t, r.Ambiguous(), "runtime-rs boots one table, not one at random")
	})

	t.Run("the pod may switch to another table present (mod.rs:486-490, not gated)", func(t *testing.T) {
		dir := setup(t)
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "qemu", ""))
		r, err := Resolve(context.Background(), rs(dir, Sources{Annotations: map[string]string{AnnotationRuntimeHypervisor: "dragonball"}}))
		require.NoError(t, err)
		require.Equal(t, "dragonball", r.HypervisorName)
		require.Equal(t, filepath.Join(dir, "vmlinux-db"), r.Hypervisor.Kernel)
		require.Equal(t, SharedFSInlineVirtioFS, r.Hypervisor.SharedFS)
		require.True(t, r.Hypervisor.IsVirtioFS())

		r, err = Resolve(context.Background(), rs(dir, Sources{Annotations: map[string]string{AnnotationRuntimeHypervisor: "clh"}}))
		require.NoError(t, err)
		require.Equal(t, "qemu", r.HypervisorName, "a table that is absent is ignored")
	})

	t.Run("hypervisor_name missing or naming no table is refused (mod.rs:504-530)", func(t *testing.T) {
		dir := setup(t)
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "", ""))
		_, err := Resolve(context.Background(), rs(dir, Sources{}))
		require.ErrorContains(t, err, "[runtime] hypervisor_name is not set; runtime-rs refuses the file")
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "clh", ""))
		_, err = Resolve(context.Background(), rs(dir, Sources{}))
		require.ErrorContains(t, err, `[runtime] hypervisor_name = "clh" names no [hypervisor.clh] table`)
	})

	t.Run("virtio_fs_daemon is canonicalized (hypervisor/mod.rs:1572-1579)", func(t *testing.T) {
		dir := setup(t)
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "qemu", ""))
		r, err := Resolve(context.Background(), rs(dir, Sources{}))
		require.NoError(t, err)
		require.Equal(t, filepath.Join(dir, "kata-virtiofsd"), r.Hypervisor.VirtioFSDaemon)
		require.NoError(t, os.Remove(filepath.Join(dir, "kata-virtiofsd")))
		_, err = Resolve(context.Background(), rs(dir, Sources{}))
		require.ErrorContains(t, err, "virtio_fs_daemon")
		require.ErrorContains(t, err, "does not exist")
	})

	t.Run("annotations enable_annotations does not admit are skipped, not refused (mod.rs:537-538)", func(t *testing.T) {
		dir := setup(t)
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "qemu", `"virtio_fs_extra_args"`))
		writeFile(t, dir, "other-kernel", "")
		r, err := Resolve(context.Background(), rs(dir, Sources{Annotations: map[string]string{
			AnnotationKernel:       filepath.Join(dir, "other-kernel"),
			AnnotationVirtioFSArgs: `["--xattr"]`,
		}}))
		require.NoError(t, err)
		require.Equal(t, filepath.Join(dir, "vmlinux-qemu"), r.Hypervisor.Kernel, "kernel annotation skipped")
		require.Equal(t, []string{"--thread-pool-size=1", "-o", "announce_submounts", "--xattr"}, r.Hypervisor.VirtioFSExtraArgs)

		// Kata's Go runtime refuses the same sandbox.
		_, err = Resolve(context.Background(), Sources{Delegate: DelegateGo4, ExplicitPath: filepath.Join(dir, "share/runtime-rs/configuration.toml"),
			Annotations: map[string]string{AnnotationKernel: filepath.Join(dir, "other-kernel")}})
		require.ErrorContains(t, err, "annotation "+AnnotationKernel+" is not enabled")
	})

	t.Run("an annotated virtio_fs_daemon matches valid_virtio_fs_daemon_paths as a pattern (config/mod.rs:358-373)", func(t *testing.T) {
		dir := setup(t)
		writeFile(t, dir, "share/runtime-rs/configuration.toml", rsConfig(dir, "qemu", `"virtio_fs_daemon"`))
		notThere := filepath.Join(dir, "kata-not-installed")
		r, err := Resolve(context.Background(), rs(dir, Sources{Annotations: map[string]string{AnnotationVirtioFSDaemon: notThere}}))
		require.NoError(t, err, "runtime-rs matches the pattern; the file need not exist")
		require.Equal(t, notThere, r.Hypervisor.VirtioFSDaemon)
		_, err = Resolve(context.Background(), rs(dir, Sources{Annotations: map[string]string{AnnotationVirtioFSDaemon: "/usr/bin/elsewhere"}}))
		require.ErrorContains(t, err, "valid_virtio_fs_daemon_paths")
	})

	t.Run("KATA_CONF_FILE first, shipped paths only (runtimes/src/manager.rs:838-846)", func(t *testing.T) {
		dir := setup(t)
		shipped := writeFile(t, dir, "etc/runtime-rs/configuration.toml", rsConfig(dir, "qemu", ""))
		opt := writeFile(t, dir, "opt.toml", rsConfig(dir, "qemu", ""))
		opts := RuntimeOptions{ConfigPath: opt}
		env := func(v string) func(string) string {
			return func(k string) string {
				if k == EnvConfigFile {
					return v
				}
				return ""
			}
		}
		r, err := Resolve(context.Background(), rs(dir, Sources{RuntimeOptions: opts, Getenv: env(shipped)}))
		require.NoError(t, err)
		require.Equal(t, shipped, r.Path)
		require.Equal(t, SourceEnv, r.Source)

		_, err = Resolve(context.Background(), rs(dir, Sources{RuntimeOptions: opts, Getenv: env(opt)}))
		require.ErrorContains(t, err, `invalid KATA_CONF_FILE "`+opt+`": only shipped Kata configuration files are accepted (Kata's runtime-rs refuses it`)

		r, err = Resolve(context.Background(), rs(dir, Sources{RuntimeOptions: opts, Getenv: env("")}))
		require.NoError(t, err)
		require.Equal(t, opt, r.Path, "then the runtime option")
	})

	t.Run("runtime options that do not parse fall back to the defaults (manager.rs:847-865)", func(t *testing.T) {
		dir := setup(t)
		def := writeFile(t, dir, "etc/runtime-rs/configuration.toml", rsConfig(dir, "qemu", ""))
		undecodable := RuntimeOptions{Err: errors.New("runtime options on stdin are not a protobuf Any")}
		r, err := Resolve(context.Background(), rs(dir, Sources{RuntimeOptions: undecodable}))
		require.NoError(t, err)
		require.Equal(t, def, r.Path)
		require.Equal(t, SourceDefault, r.Source)

		// Kata's Go runtime fails create on the same bytes.
		_, err = Resolve(context.Background(), Sources{Delegate: DelegateGo4, RuntimeOptions: undecodable, DefaultPaths: []string{def}})
		require.Error(t, err)
	})

	t.Run("drop-ins beside the canonical file, merged in name order (kata-types src/config/drop_in.rs:218-283)", func(t *testing.T) {
		dir := setup(t)
		real := writeFile(t, dir, "real/configuration.toml", rsConfig(dir, "qemu", ""))
		writeFile(t, dir, "real/config.d/10-a.toml", "[hypervisor.qemu]\nvirtio_fs_extra_args = [\"--a\"]\n")
		writeFile(t, dir, "real/config.d/20-b.toml", "[hypervisor.qemu]\nvirtio_fs_extra_args = [\"--b\"]\n")
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "share/runtime-rs"), 0o755))
		require.NoError(t, os.Symlink(real, filepath.Join(dir, "share/runtime-rs/configuration.toml")))
		r, err := Resolve(context.Background(), rs(dir, Sources{}))
		require.NoError(t, err)
		require.Equal(t, real, r.Path)
		require.Equal(t, []string{"--b"}, r.Hypervisor.VirtioFSExtraArgs)
	})
}

// TestResolveKataDeployPerShim: kata-deploy 4.x points each runtime's
// options.ConfigPath at share/defaults/kata-containers[/runtime-rs]/runtimes/
// <shim>/configuration-<shim>.toml, with a config.d of its own
// (tools/packaging/kata-deploy, 4.1.0); our drop-in there is merged.
func TestResolveKataDeployPerShim(t *testing.T) {
	for _, kind := range []DelegateKind{DelegateGo4, DelegateRuntimeRS} {
		t.Run(string(kind), func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "vmlinux-qemu", "")
			writeFile(t, dir, "vmlinux-db", "")
			daemon := writeFile(t, dir, "kata-virtiofsd", "")
			require.NoError(t, os.Symlink(daemon, filepath.Join(dir, "daemon-link")))
			sub := "opt/kata/share/defaults/kata-containers/runtimes/qemu"
			if kind == DelegateRuntimeRS {
				sub = "opt/kata/share/defaults/kata-containers/runtime-rs/runtimes/qemu-runtime-rs"
			}
			p := writeFile(t, dir, sub+"/configuration-"+filepath.Base(sub)+".toml", rsConfig(dir, "qemu", ""))
			writeFile(t, dir, sub+"/config.d/10-kata-deploy.toml", "[hypervisor.qemu]\nkernel_params = \"agent.log=debug\"\n")
			writeFile(t, dir, sub+"/config.d/90-submount-guard.toml", "[submount_guard]\non_vulnerable = \"refuse\"\ndelegate_kind = \""+string(kind)+"\"\n")
			opts := RuntimeOptions{ConfigPath: p}
			r, err := Resolve(context.Background(), Sources{Delegate: kind, RuntimeOptions: opts, DefaultPaths: []string{}, RuntimeRSDefaultPaths: []string{}})
			require.NoError(t, err)
			require.Equal(t, p, r.Path)
			var qemu Hypervisor
			for _, h := range r.Hypervisors {
				if h.Name == "qemu" {
					qemu = h.Config
				}
			}
			require.Equal(t, "agent.log=debug", qemu.KernelParams)
			require.Equal(t, PolicyRefuse, r.Guard.OnVulnerable)
			require.Equal(t, kind, r.Guard.DelegateKind)
		})
	}
}

// TestDefaultVirtioFSCache: Kata's default virtio_fs_cache is "none" in Go
// 2.x and 3.0.x and "never" from 3.1.0 on (defaultVirtioFSCacheMode in each
// tag's pkg/katautils; test/kataref compares with Kata 3.0.2 and 3.1.3).
func TestDefaultVirtioFSCache(t *testing.T) {
	for _, tc := range []struct {
		kind    DelegateKind
		version string
		want    string
	}{
		{DelegateGo3, "2.5.2", "none"},
		{DelegateGo3, "3.0.2", "none"},
		{DelegateGo3, "3.1.3", "never"},
		{DelegateGo3, "3.32.0", "never"},
		{DelegateGo3, "", "never"},
		{DelegateGo4, "4.1.0", "never"},
		{DelegateRuntimeRS, "4.1.0", "never"},
	} {
		t.Run(string(tc.kind)+" "+tc.version, func(t *testing.T) {
			require.Equal(t, tc.want, defaultVirtioFSCache(tc.kind, tc.version))
		})
	}
}

// TestResolveUsesLoadedFile: a file the caller already loaded (the shim loads
// the operator's file to find its delegate) is not read again.
func TestResolveUsesLoadedFile(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := writeFile(t, dir, "k1", ""), writeFile(t, dir, "k2", "")
	p := writeFile(t, dir, "configuration.toml", qemuConfig(k1))
	loaded, err := Load(p)
	require.NoError(t, err)
	writeFile(t, dir, "configuration.toml", qemuConfig(k2)) // the disk moves on
	r, err := Resolve(context.Background(), Sources{ExplicitPath: p, Loaded: loaded})
	require.NoError(t, err)
	require.Equal(t, k1, r.Hypervisor.Kernel, "the loaded file, not a second read")
	other, err := Resolve(context.Background(), Sources{ExplicitPath: p, Loaded: &File{Path: "/elsewhere.toml"}})
	require.NoError(t, err)
	require.Equal(t, k2, other.Hypervisor.Kernel, "a file loaded from another path is not used")
}
