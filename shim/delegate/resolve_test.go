package delegate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/config"
)

// install is a machine for Resolve: Kata shims of each kind, kernels, and
// configuration files in temporary directories.
type install struct {
	dir                     string
	go3, go4, rs            string // fake Kata shims
	fixedKernel, vulnKernel string
	goDefaults, rsDefaults  []string
	stateDir                string
}

func newInstall(t *testing.T) *install {
	t.Helper()
	dir := t.TempDir()
	in := &install{dir: dir, stateDir: filepath.Join(dir, "state")}
	in.go3, in.go4, in.rs = filepath.Join(dir, "shim-go3"), filepath.Join(dir, "shim-go4"), filepath.Join(dir, "shim-rs")
	fakeShim(t, in.go3, goShimLine("3.2.0"))
	fakeShim(t, in.go4, goShimLine("4.1.0"))
	fakeShim(t, in.rs, `Kata Containers containerd shim (Rust): id: "io.containerd.kata.v2", version: 4.1.0, commit: x`)
	in.fixedKernel, in.vulnKernel = filepath.Join(dir, "vmlinux-fixed"), filepath.Join(dir, "vmlinux-vuln")
	for _, k := range []string{in.fixedKernel, in.vulnKernel} {
		require.NoError(t, os.WriteFile(k, nil, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "virtiofsd"), nil, 0o755))
	in.goDefaults = []string{filepath.Join(dir, "etc/kata-containers/configuration.toml"), filepath.Join(dir, "usr/share/defaults/kata-containers/configuration.toml")}
	in.rsDefaults = []string{filepath.Join(dir, "etc/kata-containers/runtime-rs/configuration.toml"), filepath.Join(dir, "usr/share/defaults/kata-containers/runtime-rs/configuration.toml")}
	return in
}

// write writes a configuration at rel (under the install) booting kernel
// and naming delegate; extra lines go into [submount_guard].
func (in *install) write(t *testing.T, rel, kernel, delegate string, extra ...string) string {
	t.Helper()
	p := filepath.Join(in.dir, rel)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	body := fmt.Sprintf("[hypervisor.qemu]\nkernel = %q\nshared_fs = \"virtio-fs\"\nvirtio_fs_daemon = %q\n\n[runtime]\nhypervisor_name = \"qemu\"\n\n[submount_guard]\ndelegate_shim = %q\nstate_dir = %q\n",
		kernel, filepath.Join(in.dir, "virtiofsd"), delegate, in.stateDir)
	for _, l := range extra {
		body += l + "\n"
	}
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

// TestResolveByDelegate: the file judged is the file the delegate loads.
// The first case is the bypass of Kata 4 found through containerd: the
// pod's config_path annotation chose the file judged, while Kata 4 loads
// the runtime option's.
func TestResolveByDelegate(t *testing.T) {
	type sources struct {
		annotation, option, env string
	}
	for _, tc := range []struct {
		name string
		// setup writes the files and returns the sources.
		setup    func(t *testing.T, in *install) sources
		wantKind config.DelegateKind
		wantFile string // relative to the install
		wantSrc  config.Source
		err      string
	}{
		{
			name: "Go 4 ignores the config_path annotation",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option:     in.write(t, "vuln.toml", in.vulnKernel, in.go4),
					annotation: in.write(t, "fixed.toml", in.fixedKernel, in.go4),
				}
			},
			wantKind: config.DelegateGo4, wantFile: "vuln.toml", wantSrc: config.SourceRuntimeOptions,
		},
		{
			name: "Go 3 honours it, as Kata 3 does",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option:     in.write(t, "vuln.toml", in.vulnKernel, in.go3),
					annotation: in.write(t, "fixed.toml", in.fixedKernel, in.go3),
				}
			},
			wantKind: config.DelegateGo3, wantFile: "fixed.toml", wantSrc: config.SourceAnnotation,
		},
		{
			name: "Go 3 annotation naming a Go 4 delegate: the two disagree",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option:     in.write(t, "vuln.toml", in.vulnKernel, in.go3),
					annotation: in.write(t, "fixed.toml", in.fixedKernel, in.go4),
				}
			},
			err: "names delegate_shim",
		},
		{
			name: "Go 4 refuses a KATA_CONF_FILE outside the shipped paths",
			setup: func(t *testing.T, in *install) sources {
				in.write(t, "etc/kata-containers/configuration.toml", in.fixedKernel, in.go4)
				return sources{env: in.write(t, "mine.toml", in.vulnKernel, in.go4)}
			},
			err: "only shipped Kata configuration files are accepted",
		},
		{
			name: "Go 4 takes a shipped KATA_CONF_FILE, also through a symlink",
			setup: func(t *testing.T, in *install) sources {
				shipped := in.write(t, "usr/share/defaults/kata-containers/configuration.toml", in.vulnKernel, in.go4)
				link := filepath.Join(in.dir, "link.toml")
				require.NoError(t, os.Symlink(shipped, link))
				return sources{env: link}
			},
			wantKind: config.DelegateGo4, wantFile: "usr/share/defaults/kata-containers/configuration.toml", wantSrc: config.SourceEnv,
		},
		{
			name: "Go 4 prefers the runtime option to KATA_CONF_FILE",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option: in.write(t, "opt.toml", in.fixedKernel, in.go4),
					env:    in.write(t, "etc/kata-containers/configuration.toml", in.vulnKernel, in.go4),
				}
			},
			wantKind: config.DelegateGo4, wantFile: "opt.toml", wantSrc: config.SourceRuntimeOptions,
		},
		{
			name: "Go 3 takes any KATA_CONF_FILE",
			setup: func(t *testing.T, in *install) sources {
				return sources{env: in.write(t, "mine.toml", in.vulnKernel, in.go3)}
			},
			wantKind: config.DelegateGo3, wantFile: "mine.toml", wantSrc: config.SourceEnv,
		},
		{
			name: "runtime-rs prefers a shipped KATA_CONF_FILE to the runtime option",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option: in.write(t, "opt.toml", in.fixedKernel, in.rs),
					env:    in.write(t, "etc/kata-containers/runtime-rs/configuration.toml", in.vulnKernel, in.rs),
				}
			},
			wantKind: config.DelegateRuntimeRS, wantFile: "etc/kata-containers/runtime-rs/configuration.toml", wantSrc: config.SourceEnv,
		},
		{
			name: "runtime-rs refuses a KATA_CONF_FILE outside its shipped paths",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option: in.write(t, "opt.toml", in.fixedKernel, in.rs),
					env:    in.write(t, "etc/kata-containers/configuration.toml", in.vulnKernel, in.rs),
				}
			},
			err: "only shipped Kata configuration files are accepted",
		},
		{
			name: "runtime-rs defaults live under runtime-rs/",
			setup: func(t *testing.T, in *install) sources {
				in.write(t, "usr/share/defaults/kata-containers/runtime-rs/configuration.toml", in.vulnKernel, in.rs)
				return sources{annotation: in.write(t, "fixed.toml", in.fixedKernel, in.rs)}
			},
			wantKind: config.DelegateRuntimeRS, wantFile: "usr/share/defaults/kata-containers/runtime-rs/configuration.toml", wantSrc: config.SourceDefault,
		},
		{
			name: "a pinned delegate_kind is not asked",
			setup: func(t *testing.T, in *install) sources {
				return sources{
					option:     in.write(t, "vuln.toml", in.vulnKernel, filepath.Join(in.dir, "not-installed"), `delegate_kind = "go-4"`),
					annotation: in.write(t, "fixed.toml", in.fixedKernel, in.go3),
				}
			},
			wantKind: config.DelegateGo4, wantFile: "vuln.toml", wantSrc: config.SourceRuntimeOptions,
		},
		{
			name: "an unidentifiable delegate is an error, never a guess",
			setup: func(t *testing.T, in *install) sources {
				return sources{option: in.write(t, "vuln.toml", in.vulnKernel, filepath.Join(in.dir, "not-installed"))}
			},
			err: "cannot be identified",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newInstall(t)
			s := tc.setup(t, in)
			src := config.Sources{
				DefaultPaths: in.goDefaults, RuntimeRSDefaultPaths: in.rsDefaults,
				Getenv: func(k string) string {
					if k == config.EnvConfigFile {
						return s.env
					}
					return ""
				},
			}
			if s.annotation != "" {
				src.Annotations = map[string]string{config.AnnotationConfigPath: s.annotation}
			}
			if s.option != "" {
				src.RuntimeOptions = config.RuntimeOptions{ConfigPath: s.option}
			}
			res, id, err := Resolve(context.Background(), src, IdentifyGuard)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantKind, id.Kind)
			require.Equal(t, tc.wantKind, res.Delegate)
			require.Equal(t, filepath.Join(in.dir, tc.wantFile), res.Path)
			require.Equal(t, tc.wantSrc, res.Source)
		})
	}
}
