package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	runcoptions "github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// optionsBytes marshals runtime options the way containerd writes them to a
// shim's stdin: a google.protobuf.Any holding the message.
func optionsBytes(t *testing.T, typeURL string, m proto.Message) []byte {
	t.Helper()
	value, err := proto.Marshal(m)
	require.NoError(t, err)
	b, err := proto.Marshal(&anypb.Any{TypeUrl: typeURL, Value: value})
	require.NoError(t, err)
	return b
}

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
	opts := optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: files[SourceRuntimeOptions]})
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
		{"env wins over flag", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = nil }, SourceEnv},
		{"options without config path fall through", func(s *Sources) {
			s.Annotations = nil
			s.RuntimeOptions = optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{TypeUrl: "x"})
		}, SourceEnv},
		{"runc options are ignored", func(s *Sources) {
			s.Annotations = nil
			s.RuntimeOptions = optionsBytes(t, "containerd.runc.v1.Options", &runcoptions.Options{BinaryName: "runc"})
		}, SourceEnv},
		{"flag wins over defaults", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = nil; s.Getenv = env("") }, SourceFlag},
		{"nil env", func(s *Sources) { s.Annotations = nil; s.RuntimeOptions = nil; s.Getenv = nil }, SourceFlag},
		{"first existing default", func(s *Sources) {
			s.Annotations = nil
			s.RuntimeOptions = nil
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
		{"runtime options", Sources{RuntimeOptions: optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: missing})},
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

func TestRuntimeOptionsConfigPath(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		want string
		msg  string
	}{
		{"empty stdin", nil, "", ""},
		{"containerd type url", optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/a.toml"}), "/a.toml", ""},
		{"googleapis type url", optionsBytes(t, "type.googleapis.com/runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/b.toml"}), "/b.toml", ""},
		{"old cri type", optionsBytes(t, "cri.runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/c.toml"}), "/c.toml", ""},
		{"runc options", optionsBytes(t, "containerd.runc.v1.Options", &runcoptions.Options{SystemdCgroup: true}), "", ""},
		{"unknown type", optionsBytes(t, "example.Other", &runtimeoptions.Options{ConfigPath: "/d.toml"}), "",
			`runtime options of type "example.Other" are not supported (Kata's shim rejects them too); configure runtimeoptions.v1.Options: invalid argument`},
		{"garbage", []byte{0xff, 0xff, 0xff}, "", "runtime options on stdin are not a protobuf Any"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RuntimeOptionsConfigPath(tc.data)
			if tc.msg != "" {
				require.ErrorContains(t, err, tc.msg)
				require.True(t, errdefs.IsInvalidArgument(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
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
