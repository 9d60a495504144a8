package config

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestAnnotationEnabled(t *testing.T) {
	cases := []struct {
		name   string
		enable []string
		key    string
		want   bool
	}{
		{"not a hypervisor annotation", nil, "io.katacontainers.config.runtime.experimental", true},
		{"config path is not gated", nil, AnnotationConfigPath, true},
		{"empty list", nil, AnnotationKernel, false},
		{"exact", []string{"kernel"}, AnnotationKernel, true},
		{"unanchored: kernel admits kernel_params", []string{"kernel"}, AnnotationKernelParams, true},
		{"unanchored: params admits kernel_params", []string{"params"}, AnnotationKernelParams, true},
		{"anchored excludes", []string{"^kernel$"}, AnnotationKernelParams, false},
		{"alternation", []string{"enable_iommu|virtio_fs_daemon"}, AnnotationVirtioFSDaemon, true},
		{"dot star", []string{".*"}, AnnotationVirtioFSCache, true},
		{"invalid regex matches nothing", []string{"(kernel"}, AnnotationKernel, false},
		{"invalid then valid", []string{"(", "kernel"}, AnnotationKernel, true},
		{"prefix only", []string{"kernel"}, AnnotationHypervisorPrefix, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, AnnotationEnabled(tc.enable, tc.key))
		})
	}
}

func TestPathInGlobs(t *testing.T) {
	dir := t.TempDir()
	d1 := writeFile(t, dir, "libexec/virtiofsd", "x")
	writeFile(t, dir, "libexec/kata-virtiofsd", "x")
	cases := []struct {
		name  string
		globs []string
		path  string
		want  bool
	}{
		{"exact existing", []string{d1}, d1, true},
		{"star", []string{filepath.Join(dir, "libexec/*")}, filepath.Join(dir, "libexec/kata-virtiofsd"), true},
		{"question mark", []string{filepath.Join(dir, "libexec/virtiofs?")}, d1, true},
		{"glob matches only existing files", []string{filepath.Join(dir, "libexec/*")}, filepath.Join(dir, "libexec/other"), false},
		{"no cleaning: double slash", []string{filepath.Join(dir, "libexec/*")}, dir + "/libexec//virtiofsd", false},
		{"malformed glob", []string{filepath.Join(dir, "libexec/[")}, d1, false},
		{"empty list", nil, d1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, pathInGlobs(tc.globs, tc.path))
		})
	}
}

func TestAnnotationOverrides(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinuz", "configured kernel")
	other := writeFile(t, dir, "vmlinuz-annotated", "annotated kernel")
	daemon := writeFile(t, dir, "libexec/kata-virtiofsd", "x")
	sum := sha512.Sum512([]byte("annotated kernel"))
	good := hex.EncodeToString(sum[:])
	conf := `[hypervisor.qemu]
kernel = "` + kernel + `"
kernel_params = "quiet"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["` + dir + `/libexec/*"]
virtio_fs_extra_args = ["--thread-pool-size=1"]
virtio_fs_cache = "auto"
enable_annotations = ["kernel", "virtio_fs_daemon", "virtio_fs_extra_args", "virtio_fs_cache", "shared_fs", "image"]
`
	path := writeFile(t, dir, "configuration.toml", conf)
	cases := []struct {
		name  string
		ann   map[string]string
		check func(t *testing.T, h Hypervisor)
		msg   string
		errIs func(error) bool
	}{
		{name: "none", ann: nil, check: func(t *testing.T, h Hypervisor) {
			require.Equal(t, kernel, h.Kernel)
			require.Equal(t, "/opt/kata/libexec/virtiofsd", h.VirtioFSDaemon)
		}},
		{name: "kernel", ann: map[string]string{AnnotationKernel: other}, check: func(t *testing.T, h Hypervisor) { require.Equal(t, other, h.Kernel) }},
		{name: "kernel with good hash", ann: map[string]string{AnnotationKernel: other, AnnotationKernelHash: good}, check: func(t *testing.T, h Hypervisor) { require.Equal(t, other, h.Kernel) }},
		{name: "kernel with bad hash", ann: map[string]string{AnnotationKernel: other, AnnotationKernelHash: "00"},
			msg: "annotation io.katacontainers.config.hypervisor.kernel_hash: " + other + " has SHA-512 " + good + ", annotation expects 00: invalid argument"},
		{name: "kernel hash type", ann: map[string]string{AnnotationKernel: other, AnnotationKernelHash: good, AnnotationAssetHashType: "md5"},
			msg: `hash type "md5" is not supported (only sha512)`},
		{name: "empty kernel annotation is ignored", ann: map[string]string{AnnotationKernel: ""}, check: func(t *testing.T, h Hypervisor) { require.Equal(t, kernel, h.Kernel) }},
		{name: "relative kernel", ann: map[string]string{AnnotationKernel: "vmlinuz"},
			msg: `annotation io.katacontainers.config.hypervisor.kernel="vmlinuz": not an absolute path: invalid argument`},
		{name: "missing kernel", ann: map[string]string{AnnotationKernel: dir + "/nope"}, errIs: errdefs.IsNotFound,
			msg: `annotation io.katacontainers.config.hypervisor.kernel="` + dir + `/nope": stat ` + dir + `/nope: no such file or directory: not found`},
		{name: "kernel_params admitted by the unanchored regex", ann: map[string]string{AnnotationKernelParams: "debug"},
			check: func(t *testing.T, h Hypervisor) { require.Equal(t, "quiet debug", h.KernelParams) }},
		{name: "daemon in globs", ann: map[string]string{AnnotationVirtioFSDaemon: daemon}, check: func(t *testing.T, h Hypervisor) { require.Equal(t, daemon, h.VirtioFSDaemon) }},
		{name: "daemon outside globs", ann: map[string]string{AnnotationVirtioFSDaemon: "/usr/bin/evil"},
			msg: `annotation io.katacontainers.config.hypervisor.virtio_fs_daemon="/usr/bin/evil": not an existing file matched by [hypervisor.qemu] valid_virtio_fs_daemon_paths ["` + dir + `/libexec/*"] of ` + path + `: invalid argument`},
		{name: "daemon matching a glob but absent", ann: map[string]string{AnnotationVirtioFSDaemon: dir + "/libexec/absent"},
			msg: "not an existing file matched by"},
		{name: "extra args appended", ann: map[string]string{AnnotationVirtioFSArgs: `["--announce-submounts","-d"]`},
			check: func(t *testing.T, h Hypervisor) {
				require.Equal(t, []string{"--thread-pool-size=1", "--announce-submounts", "-d"}, h.VirtioFSExtraArgs)
			}},
		{name: "extra args may not carry our daemon's options", ann: map[string]string{AnnotationVirtioFSArgs: `["--guard-upstream=/bin/sh"]`},
			msg: `annotation io.katacontainers.config.hypervisor.virtio_fs_extra_args="[\"--guard-upstream=/bin/sh\"]": "--guard-upstream=/bin/sh" is a kata-virtiofsd option only the configuration file may set; remove it from the pod's annotations: invalid argument`},
		{name: "extra args not json", ann: map[string]string{AnnotationVirtioFSArgs: `--announce-submounts`},
			msg: `annotation io.katacontainers.config.hypervisor.virtio_fs_extra_args="--announce-submounts": want a JSON array of strings: invalid character '-' in numeric literal: invalid argument`},
		{name: "cache", ann: map[string]string{AnnotationVirtioFSCache: "always"}, check: func(t *testing.T, h Hypervisor) { require.Equal(t, "always", h.VirtioFSCache) }},
		{name: "shared_fs 9p", ann: map[string]string{AnnotationSharedFS: "virtio-9p"}, check: func(t *testing.T, h Hypervisor) { require.False(t, h.IsVirtioFS()) }},
		{name: "shared_fs bad", ann: map[string]string{AnnotationSharedFS: "virtio-fs-nydus"},
			msg: `annotation io.katacontainers.config.hypervisor.shared_fs="virtio-fs-nydus": allowed: virtio-9p, virtio-fs: invalid argument`},
		{name: "disabled annotation", ann: map[string]string{AnnotationHypervisorPrefix + "default_vcpus": "4"},
			msg: `annotation io.katacontainers.config.hypervisor.default_vcpus is not enabled: its name after "io.katacontainers.config.hypervisor." must match a regular expression in [hypervisor.qemu] enable_annotations ["kernel", "virtio_fs_daemon", "virtio_fs_extra_args", "virtio_fs_cache", "shared_fs", "image"] of ` + path + ` (Kata refuses the sandbox too): invalid argument`},
		{name: "other annotations pass", ann: map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.katacontainers.config.runtime.experimental": "x"},
			check: func(t *testing.T, h Hypervisor) { require.Equal(t, kernel, h.Kernel) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Resolve(context.Background(), Sources{ExplicitPath: path, Annotations: tc.ann})
			if tc.msg != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tc.msg)
				is := tc.errIs
				if is == nil {
					is = errdefs.IsInvalidArgument
				}
				require.True(t, is(err), err)
				return
			}
			require.NoError(t, err)
			tc.check(t, r.Hypervisor)
		})
	}
}

func TestAnnotationsGateOnEveryCandidate(t *testing.T) {
	dir := t.TempDir()
	k := writeFile(t, dir, "k", "x")
	path := writeFile(t, dir, "configuration.toml", `[hypervisor.qemu]
kernel = "`+k+`"
virtio_fs_daemon = "/v"
enable_annotations = ["kernel"]
[hypervisor.clh]
kernel = "`+k+`"
virtio_fs_daemon = "/v"
`)
	_, err := Resolve(context.Background(), Sources{ExplicitPath: path, Annotations: map[string]string{AnnotationKernel: k}})
	require.ErrorContains(t, err, "annotation io.katacontainers.config.hypervisor.kernel is not enabled")
	require.ErrorContains(t, err, "[hypervisor.clh] enable_annotations []")
}
