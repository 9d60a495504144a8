package kataref

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/pbwire"
	"github.com/kata-submount-guard/kata-submount-guard/shim"
	"github.com/kata-submount-guard/kata-submount-guard/shim/delegate"
)

// machine holds the files of one differential case: configurations that
// each boot their own kernel (so the values also tell the files apart), and
// a delegate_shim that is the tag's real Kata shim.
type machine struct {
	t   *testing.T
	k   kata
	dir string
}

type file struct {
	kernel      string   // name of the kernel file under the case dir
	enable      []string // enable_annotations
	daemon      string   // virtio_fs_daemon under the case dir; default "virtiofsd"
	extraArgs   []string // default Kata's ["--thread-pool-size=1", "--announce-submounts"]
	dropIns     map[string]string
	noGuardShim bool // leave delegate_shim out (a drop-in sets it)
}

// write writes f at path (absolute, or relative to the case dir).
func (m *machine) write(path string, f file) string {
	t := m.t
	if !filepath.IsAbs(path) {
		path = filepath.Join(m.dir, path)
	}
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	list := func(l []string) string {
		qs := make([]string, len(l))
		for i, s := range l {
			qs[i] = q(s)
		}
		return "[" + strings.Join(qs, ", ") + "]"
	}
	if f.daemon == "" {
		f.daemon = "virtiofsd"
	}
	if f.extraArgs == nil {
		f.extraArgs = []string{"--thread-pool-size=1", "--announce-submounts"}
	}
	kernel := filepath.Join(m.dir, f.kernel)
	require.NoError(t, os.WriteFile(kernel, nil, 0o644))
	for _, d := range []string{"virtiofsd", "virtiofsd-other", f.daemon} {
		require.NoError(t, os.WriteFile(filepath.Join(m.dir, d), nil, 0o755))
	}
	body := fmt.Sprintf(`[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = %s
shared_fs = "virtio-fs"
virtio_fs_daemon = %s
valid_virtio_fs_daemon_paths = [%s]
virtio_fs_extra_args = %s
enable_annotations = %s

[agent.kata]

[runtime]

[submount_guard]
state_dir = %s
`, q(kernel), q(filepath.Join(m.dir, f.daemon)), q(filepath.Join(m.dir, "virtiofsd*")), list(f.extraArgs), list(f.enable), q(filepath.Join(m.dir, "state")))
	if !f.noGuardShim {
		body += "delegate_shim = " + q(m.k.shim) + "\n"
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	for name, content := range f.dropIns {
		dir := filepath.Join(filepath.Dir(path), config.DropInDir)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		content = strings.ReplaceAll(content, "@DIR@", m.dir)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return path
}

// runtimeOptions is what containerd writes on a shim's stdin for
// options.ConfigPath = path.
func runtimeOptions(path string) []byte {
	if path == "" {
		return nil
	}
	inner := pbwire.AppendStringField(nil, 2, path)
	any := pbwire.AppendStringField(nil, 1, "runtimeoptions.v1.Options") // as containerd 1.6/1.7 write it
	return pbwire.AppendBytesField(any, 2, inner)
}

// TestConfigAgreesWithKata: for every archived Kata tag and a matrix of
// sources, the file Kata's own shim code loads and the hypervisor values it
// ends with equal what we resolve, and where Kata refuses, so do we. Our
// side identifies the delegate from the tag's real shim binary.
func TestConfigAgreesWithKata(t *testing.T) {
	katas := requireKatas(t)
	const kernelAnn, argsAnn, daemonAnn = config.AnnotationKernel, config.AnnotationVirtioFSArgs, config.AnnotationVirtioFSDaemon
	go4 := func(k kata) bool { return k.is4() }
	always := func(kata) bool { return true }
	cases := []struct {
		name string
		// setup writes the files and returns the request.
		setup func(m *machine) kataCase
		// refused says whether Kata refuses the case (nil: never), so that
		// a refusal for another reason cannot pass for agreement.
		refused func(k kata) bool
	}{
		{"runtime option", func(m *machine) kataCase {
			return kataCase{ConfigPath: m.write("opt.toml", file{kernel: "k-opt"})}
		}, nil},
		{"config_path annotation and runtime option", func(m *machine) kataCase {
			return kataCase{
				ConfigPath:  m.write("vuln.toml", file{kernel: "k-vuln"}),
				Annotations: map[string]string{config.AnnotationConfigPath: m.write("fixed.toml", file{kernel: "k-fixed"})},
			}
		}, nil},
		{"KATA_CONF_FILE outside the shipped paths", func(m *machine) kataCase {
			m.write(m.k.defaults[0], file{kernel: "k-default"})
			return kataCase{Env: m.write("mine.toml", file{kernel: "k-env"})}
		}, go4},
		{"KATA_CONF_FILE at a shipped path, through a symlink", func(m *machine) kataCase {
			shipped := m.write(m.k.defaults[1], file{kernel: "k-shipped"})
			link := filepath.Join(m.dir, "link.toml")
			require.NoError(m.t, os.Symlink(shipped, link))
			return kataCase{Env: link}
		}, nil},
		{"runtime option before KATA_CONF_FILE", func(m *machine) kataCase {
			return kataCase{
				ConfigPath: m.write("opt.toml", file{kernel: "k-opt"}),
				Env:        m.write(m.k.defaults[0], file{kernel: "k-env"}),
			}
		}, nil},
		{"defaults: /etc before the share directory", func(m *machine) kataCase {
			m.write(m.k.defaults[0], file{kernel: "k-etc"})
			m.write(m.k.defaults[1], file{kernel: "k-share"})
			return kataCase{}
		}, nil},
		{"defaults: the share directory alone", func(m *machine) kataCase {
			m.write(m.k.defaults[1], file{kernel: "k-share"})
			return kataCase{}
		}, nil},
		{"config.d overrides kernel, daemon, extra args and delegate_shim", func(m *machine) kataCase {
			p := m.write("base/configuration.toml", file{kernel: "k-base", noGuardShim: true, dropIns: map[string]string{
				"10-kernel.toml": "[hypervisor.qemu]\nkernel = \"@DIR@/k-dropin\"\n",
				"20-daemon.toml": "[hypervisor.qemu]\nvirtio_fs_daemon = \"@DIR@/virtiofsd-other\"\nvirtio_fs_extra_args = [\"--thread-pool-size=4\"]\n",
				"90-guard.toml":  fmt.Sprintf("[submount_guard]\ndelegate_shim = %q\n", m.k.shim),
			}})
			require.NoError(m.t, os.WriteFile(filepath.Join(m.dir, "k-dropin"), nil, 0o644))
			return kataCase{ConfigPath: p}
		}, nil},
		{"kernel annotation admitted by enable_annotations", func(m *machine) kataCase {
			require.NoError(m.t, os.WriteFile(filepath.Join(m.dir, "k-annotated"), nil, 0o644))
			return kataCase{
				ConfigPath:  m.write("opt.toml", file{kernel: "k-opt", enable: []string{"kernel"}}),
				Annotations: map[string]string{kernelAnn: filepath.Join(m.dir, "k-annotated")},
			}
		}, nil},
		{"kernel annotation not admitted", func(m *machine) kataCase {
			require.NoError(m.t, os.WriteFile(filepath.Join(m.dir, "k-annotated"), nil, 0o644))
			return kataCase{
				ConfigPath:  m.write("opt.toml", file{kernel: "k-opt", enable: []string{"virtio_fs_extra_args"}}),
				Annotations: map[string]string{kernelAnn: filepath.Join(m.dir, "k-annotated")},
			}
		}, always},
		{"virtio_fs_extra_args annotation is appended", func(m *machine) kataCase {
			return kataCase{
				ConfigPath:  m.write("opt.toml", file{kernel: "k-opt", enable: []string{"virtio_fs_extra_args"}}),
				Annotations: map[string]string{argsAnn: `["--announce-submounts","-o","xattr"]`},
			}
		}, nil},
		{"virtio_fs_daemon annotation in valid_virtio_fs_daemon_paths", func(m *machine) kataCase {
			return kataCase{
				ConfigPath:  m.write("opt.toml", file{kernel: "k-opt", enable: []string{"virtio_fs_daemon"}}),
				Annotations: map[string]string{daemonAnn: filepath.Join(m.dir, "virtiofsd-other")},
			}
		}, nil},
		{"virtio_fs_daemon annotation outside valid_virtio_fs_daemon_paths", func(m *machine) kataCase {
			require.NoError(m.t, os.WriteFile(filepath.Join(m.dir, "elsewhere"), nil, 0o755))
			return kataCase{
				ConfigPath:  m.write("opt.toml", file{kernel: "k-opt", enable: []string{"virtio_fs_daemon"}}),
				Annotations: map[string]string{daemonAnn: filepath.Join(m.dir, "elsewhere")},
			}
		}, always},
	}
	for _, k := range katas {
		t.Run(k.tag, func(t *testing.T) {
			oracle := k.oracle(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					m := &machine{t: t, k: k, dir: t.TempDir()}
					for _, d := range k.defaults {
						require.NoFileExists(t, d, "left over by another run")
						t.Cleanup(func() { os.RemoveAll(filepath.Dir(d)) })
					}
					c := tc.setup(m)
					want := k.ask(t, oracle, c)
					wantRefused := tc.refused != nil && tc.refused(k)
					require.Equal(t, wantRefused, want.err() != "", "does %s refuse? its answer: %+v", k, want)

					src := config.Sources{
						Annotations:    c.Annotations,
						RuntimeOptions: shim.DecodeRuntimeOptions(runtimeOptions(c.ConfigPath)),
						Getenv: func(key string) string {
							if key == config.EnvConfigFile {
								return c.Env
							}
							return ""
						},
						DefaultPaths:          k.defaults,
						RuntimeRSDefaultPaths: []string{filepath.Join(m.dir, "no-runtime-rs.toml")},
					}
					res, id, err := delegate.Resolve(context.Background(), src, delegate.IdentifyGuard)
					if want.err() != "" {
						require.Error(t, err, "%s refuses (%s); we resolved %+v", k, want.err(), res)
						t.Logf("both refuse: Kata: %s; we: %v", want.err(), err)
						return
					}
					require.NoError(t, err, "%s loads %s", k, want.File)
					wantKind := config.DelegateGo3
					if k.is4() {
						wantKind = config.DelegateGo4
					}
					require.Equal(t, wantKind, id.Kind, "identified from %s --version", k.shim)
					require.Equal(t, want.File, res.Path, "the file %s loads", k)
					h := res.Hypervisor
					got := map[string]any{
						"KernelPath": h.Kernel, "ImagePath": h.Image, "InitrdPath": h.Initrd,
						"SharedFS": h.SharedFS, "VirtioFSDaemon": h.VirtioFSDaemon,
						"VirtioFSExtraArgs": h.VirtioFSExtraArgs, "VirtioFSCache": h.VirtioFSCache,
					}
					for name, v := range got {
						kv, ok := want.Values[name]
						if !ok {
							continue // this tag has no such field
						}
						require.Equal(t, fmt.Sprint(kv), fmt.Sprint(v), "%s: %s", k, name)
					}
				})
			}
		})
	}
}
