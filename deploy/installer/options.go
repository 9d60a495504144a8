package installer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Defaults of the environment (kata-deploy's names and values where it has
// them). Every path but HostRoot and ArtifactsDir is a path on the host.
const (
	DefaultHostRoot       = "/host"
	DefaultKataPrefix     = "/opt/kata"
	DefaultGuardPrefix    = "/opt/kata-submount-guard"
	DefaultContainerdConf = "/etc/containerd/config.toml"
	// DefaultRestartCommand restarts containerd as kata-deploy 4.1.0 does
	// (systemd daemon-reload, then restart of the containerd unit).
	DefaultRestartCommand = "systemctl daemon-reload && systemctl restart containerd"
	DefaultNFDFeaturesDir = "/etc/kubernetes/node-feature-discovery/features.d"
	DefaultInterval       = 10 * time.Second

	// KataRuntimeLabel is what kata-deploy sets on a node once Kata is
	// installed there; we act only then.
	KataRuntimeLabel = "katacontainers.io/kata-runtime"
	// LabelPrefix starts every label and NFD feature we publish.
	LabelPrefix = "submount-guard.katacontainers.io/"
	// NFDFeatureFile is our file in NFD_FEATURES_DIR.
	NFDFeatureFile = "kata-submount-guard"
	// KataDropIn is the file we put in each shim's config.d; the 90 sorts it
	// after kata-deploy's 10- to 50- files, so our keys win.
	KataDropIn = "90-submount-guard.toml"
	// CtrdDropIn is our containerd drop-in, when kata-deploy uses one.
	CtrdDropIn = "kata-submount-guard.toml"
)

// Binaries are the programs we install into GUARD_PREFIX/bin.
var Binaries = []string{"containerd-shim-kata-v2", "kata-runtime", "kata-virtiofsd"}

// Options configure an Installer. OptionsFromEnv fills them from the
// DaemonSet's environment; tests set them directly.
type Options struct {
	NodeName       string
	HostRoot       string
	KataPrefix     string
	GuardPrefix    string
	ContainerdConf string
	RestartCommand string
	NFDFeaturesDir string
	// Shims limits the shims taken over (kata-deploy's names, e.g. qemu,
	// qemu-runtime-rs); empty means every Kata handler in containerd.
	Shims []string
	// ArtifactsDir holds our binaries in the image.
	ArtifactsDir string
	Interval     time.Duration

	// Restart replaces running RestartCommand (tests).
	Restart func(ctx context.Context) error
	// Nodes is the Kubernetes node API; nil publishes no labels.
	Nodes NodeAPI
}

// OptionsFromEnv reads the DaemonSet's environment (see the manifest and
// README "Install on Kubernetes").
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	get := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	o := Options{
		NodeName:       get("NODE_NAME", ""),
		HostRoot:       get("HOST_ROOT", DefaultHostRoot),
		KataPrefix:     get("KATA_PREFIX", DefaultKataPrefix),
		GuardPrefix:    get("GUARD_PREFIX", DefaultGuardPrefix),
		ContainerdConf: get("CONTAINERD_CONF_FILE", DefaultContainerdConf),
		RestartCommand: get("CONTAINERD_RESTART_COMMAND", DefaultRestartCommand),
		NFDFeaturesDir: get("NFD_FEATURES_DIR", DefaultNFDFeaturesDir),
		ArtifactsDir:   get("ARTIFACTS_DIR", ""),
		Interval:       DefaultInterval,
	}
	o.Shims = strings.Fields(strings.ReplaceAll(getenv("SHIMS"), ",", " "))
	if v := getenv("RECONCILE_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("RECONCILE_INTERVAL %q: want a positive duration such as 10s", v)
		}
		o.Interval = d
	}
	for _, kv := range []struct{ key, val string }{
		{"KATA_PREFIX", o.KataPrefix}, {"GUARD_PREFIX", o.GuardPrefix},
		{"CONTAINERD_CONF_FILE", o.ContainerdConf}, {"NFD_FEATURES_DIR", o.NFDFeaturesDir},
	} {
		if !filepath.IsAbs(kv.val) {
			return o, fmt.Errorf("%s %q: want an absolute path on the host", kv.key, kv.val)
		}
	}
	if !filepath.IsAbs(o.HostRoot) {
		return o, fmt.Errorf("HOST_ROOT %q: want the absolute path where the host's / is mounted", o.HostRoot)
	}
	for _, s := range o.Shims {
		if !validLabelName(LabelPrefix, s+".protected") {
			return o, fmt.Errorf("SHIMS: %q is not a shim name kata-deploy uses (letters, digits, '-', '_', '.')", s)
		}
	}
	if o.ArtifactsDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("find our binaries: %w; set ARTIFACTS_DIR", err)
		}
		o.ArtifactsDir = filepath.Dir(exe)
	}
	return o, nil
}

// runRestart runs the restart command with the host's / as its root.
func (o Options) runRestart(ctx context.Context) error {
	if o.Restart != nil {
		return o.Restart(ctx)
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", o.RestartCommand)
	if filepath.Clean(o.HostRoot) != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: o.HostRoot}
	}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("restart containerd (CONTAINERD_RESTART_COMMAND %q in %s): %w: %s", o.RestartCommand, o.HostRoot, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hostFS maps host paths to where the host's / is mounted.
type hostFS struct{ root string }

func (h hostFS) abs(p string) string { return filepath.Join(h.root, p) }

func (h hostFS) rel(p string) string {
	r, err := filepath.Rel(h.root, p)
	if err != nil || strings.HasPrefix(r, "..") {
		return p
	}
	return "/" + r
}

// resolve follows symlinks of the host path p inside the host's root, as
// the host itself would (an absolute target is a host path).
func (h hostFS) resolve(p string) (string, error) {
	p = filepath.Clean(p)
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := "/"
		linked := false
		for i, part := range parts {
			next := filepath.Join(cur, part)
			fi, err := os.Lstat(h.abs(next))
			if err != nil {
				return "", err
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				cur = next
				continue
			}
			target, err := os.Readlink(h.abs(next))
			if err != nil {
				return "", err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			p = filepath.Join(append([]string{target}, parts[i+1:]...)...)
			linked = true
			break
		}
		if !linked {
			return cur, nil
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}
