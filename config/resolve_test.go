package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestResolveOrder(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinuz", "not a kernel")
	files := map[Source]string{}
	for _, s := range []Source{SourceAnnotation, SourceRuntimeOptions, SourceEnv, SourceFlag, SourceDefault} {
		files[s] = writeFile(t, dir, string(s)+"/configuration.toml", qemuConfig(kernel))
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvConfigFile {
				return v
			}
			return ""
		}
	}
	opts := RuntimeOptions{ConfigPath: files[SourceRuntimeOptions]}
	all := Sources{
		Annotations:    map[string]string{AnnotationConfigPath: files[SourceAnnotation]},
		RuntimeOptions: opts,
		Getenv:         env(files[SourceEnv]),
		ExplicitPath:   files[SourceFlag],
		DefaultPaths:   []string{filepath.Join(dir, "missing.toml"), files[SourceDefault]},
	}
	cases := []struct {
		name string
		edit func(s *Sources)
		want Source
	}{
		{"annotation wins over everything", func(s *Sources) {}, SourceAnnotation},
		{"runtime options win over env", func(s *Sources) { s.Annotations = map[string]string{"other": "x"} }, SourceRuntimeOptions},
		{"empty annotation is no annotation", func(s *Sources) { s.Annotations = map[string]string{AnnotationConfigPath: ""} }, SourceRuntimeOptions},
		{"env wins over flag", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = RuntimeOptions{} }, SourceEnv},
		{"flag wins over defaults", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = RuntimeOptions{}; s.Getenv = env("") }, SourceFlag},
		{"nil env", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = RuntimeOptions{}; s.Getenv = nil }, SourceFlag},
		{"first existing default", func(s *Sources) {
			s.Annotations = nil
			s.RuntimeOptions = RuntimeOptions{}
			s.Getenv = nil
			s.ExplicitPath = ""
		}, SourceDefault},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := all
			tc.edit(&src)
			r, err := Resolve(context.Background(), src)
			require.NoError(t, err)
			require.Equal(t, tc.want, r.Source)
			require.Equal(t, files[tc.want], r.Path)
			require.Equal(t, "qemu", r.HypervisorName)
			require.Equal(t, kernel, r.Hypervisor.Kernel)
		})
	}
}

func TestResolveMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.toml")
	cases := []struct {
		name string
		src  Sources
		msg  string
	}{
		{"annotation", Sources{Annotations: map[string]string{AnnotationConfigPath: missing}},
			"configuration file from annotation io.katacontainers.config_path: file " + missing + " does not exist: not found"},
		{"runtime options", Sources{RuntimeOptions: RuntimeOptions{ConfigPath: missing}},
			"configuration file from containerd runtime option ConfigPath: file " + missing + " does not exist: not found"},
		{"env", Sources{Getenv: func(string) string { return missing }},
			"configuration file from environment variable KATA_CONF_FILE: file " + missing + " does not exist: not found"},
		{"flag", Sources{ExplicitPath: missing},
			"configuration file from --config: file " + missing + " does not exist: not found"},
		{"no default", Sources{DefaultPaths: []string{missing}},
			"no Kata configuration file for Kata's Go runtime 2.x/3.x: none of " + missing + " exists; install one or name it with io.katacontainers.config_path, the runtime option ConfigPath or KATA_CONF_FILE: not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.src.DefaultPaths == nil {
				tc.src.DefaultPaths = []string{filepath.Join(dir, "default-also-missing")}
			}
			_, err := Resolve(context.Background(), tc.src)
			require.Error(t, err)
			require.True(t, errdefs.IsNotFound(err), err)
			require.Equal(t, tc.msg, err.Error())
		})
	}
}

func TestResolveSymlinkedConfigUsesTargetDropIns(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinuz", "x")
	other := writeFile(t, dir, "vmlinuz-other", "x")
	target := writeFile(t, dir, "share/configuration-qemu.toml", qemuConfig(kernel))
	writeFile(t, dir, "share/config.d/10-kernel.toml", "[hypervisor.qemu]\nkernel = \""+other+"\"\n")
	writeFile(t, dir, "etc/config.d/10-kernel.toml", "this is not read")
	link := filepath.Join(dir, "etc/configuration.toml")
	require.NoError(t, os.Symlink(target, link))

	r, err := Resolve(context.Background(), Sources{ExplicitPath: link})
	require.NoError(t, err)
	require.Equal(t, target, r.Path)
	require.Equal(t, other, r.Hypervisor.Kernel)
	require.Equal(t, []string{filepath.Join(dir, "share/config.d/10-kernel.toml")}, r.File.DropIns)
}

func TestResolveRelativePathAndKernelSymlink(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, dir, "vmlinux-6.1", "x")
	require.NoError(t, os.Symlink(kernel, filepath.Join(dir, "vmlinux.container")))
	writeFile(t, dir, "configuration.toml", qemuConfig(filepath.Join(dir, "vmlinux.container")))
	t.Chdir(dir)
	r, err := Resolve(context.Background(), Sources{ExplicitPath: "configuration.toml"})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "configuration.toml"), r.Path)
	// Kata resolves the kernel's symlinks; so do we.
	require.Equal(t, kernel, r.Hypervisor.Kernel)
}
