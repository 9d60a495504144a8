package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Installer installs, re-applies and removes the guard on one node.
type Installer struct {
	opt  Options
	host hostFS
	// verdicts caches kernel verdicts by path, size, mtime and fixed_releases
	// so that a reconcile every few seconds does not re-read kernels.
	verdicts map[string]verdict.Report
	// installed remembers each binary we found or put in place equal to
	// ours, by the file's identity, so that a reconcile does not re-read
	// tens of megabytes to compare them.
	installed map[string]fileID
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func idOf(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true
}

// New returns an Installer for opt.
func New(opt Options) *Installer {
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	return &Installer{opt: opt, host: hostFS{root: opt.HostRoot}, verdicts: map[string]verdict.Report{}, installed: map[string]fileID{}}
}

// Shim is one Kata runtime handler of containerd that kata-deploy configured.
type Shim struct {
	Name     string // kata-deploy's shim name: qemu, qemu-runtime-rs, ...
	Handler  string // containerd's runtime handler: kata-qemu
	PluginID string
	// Delegate is Kata's shim, where kata-deploy pointed runtime_path.
	Delegate string
	// ConfigFile is options.ConfigPath with symlinks resolved (host path).
	ConfigFile string
	// RuntimePath is the effective runtime_path now, PathFile the file that
	// sets it.
	RuntimePath string
	PathFile    string
	// KataFile is the containerd file where kata-deploy set runtime_path.
	KataFile string
}

// ShimReport is what Status and the labels say of one shim.
type ShimReport struct {
	Shim, Handler, Delegate, ConfigFile string
	// TakenOver: containerd runs our shim for the handler. DropIn: our
	// config.d file is there as we would write it. Guarded: both, and our
	// binaries are installed.
	TakenOver, DropIn, Guarded bool
	Verdict                    string
	Protected                  bool
	Reason                     string `json:",omitempty"`
}

// ours is our shim on the host.
func (in *Installer) ours() string { return filepath.Join(in.opt.GuardPrefix, "bin", shimBinary) }

var configPathShim = regexp.MustCompile(`/runtimes/([^/]+)/configuration-([^/]+)\.toml$`)

// discover lists the Kata handlers in containerd's configuration: those
// whose runtime_path, without our drop-in, is one of kata-deploy's shims, or
// ours with the Kata shim recorded in st. All are reported and labelled;
// only the selected ones (SHIMS) are taken over.
func (in *Installer) discover(cfg *ctrdConfig, st *state) []Shim {
	goShim := filepath.Join(in.opt.KataPrefix, "bin", shimBinary)
	rsShim := filepath.Join(in.opt.KataPrefix, "runtime-rs", "bin", shimBinary)
	var out []Shim
	for _, r := range cfg.runtimes(st.CtrdDropIn) {
		delegate := r.KataPath
		if delegate == in.ours() {
			delegate = in.delegateOf(st, r)
		}
		if delegate != goShim && delegate != rsShim {
			continue
		}
		name := strings.TrimPrefix(r.Handler, "kata-")
		if m := configPathShim.FindStringSubmatch(r.ConfigPath); m != nil && m[1] == m[2] {
			name = m[1]
		}
		s := Shim{
			Name: name, Handler: r.Handler, PluginID: r.PluginID, Delegate: delegate,
			RuntimePath: r.RuntimePath, PathFile: r.PathFile, KataFile: r.KataFile,
			ConfigFile: r.ConfigPath,
		}
		if r.ConfigPath != "" {
			if p, err := in.host.resolve(r.ConfigPath); err == nil {
				s.ConfigFile = p
			}
		}
		out = append(out, s)
	}
	return out
}

// selected says whether SHIMS lets us take s over.
func (in *Installer) selected(s Shim) bool {
	return len(in.opt.Shims) == 0 || contains(in.opt.Shims, s.Name)
}

// delegateOf is the Kata shim of a handler already pointed at ours: as
// recorded, else (the record lost) kata-deploy's shim for its ConfigPath.
func (in *Installer) delegateOf(st *state, r ctrdRuntime) string {
	if d := st.Handlers[r.Handler]; d != "" {
		return d
	}
	if strings.Contains(r.ConfigPath, "/kata-containers/runtime-rs/") {
		return filepath.Join(in.opt.KataPrefix, "runtime-rs", "bin", shimBinary)
	}
	return filepath.Join(in.opt.KataPrefix, "bin", shimBinary)
}

// Apply makes the node guarded: it installs our binaries, takes over every
// Kata handler, writes each shim's drop-in, restarts containerd if its
// configuration changed, and publishes the labels. It is idempotent and is
// what the DaemonSet re-runs to undo a kata-deploy reinstall.
func (in *Installer) Apply(ctx context.Context) ([]ShimReport, error) {
	binsChanged, err := in.installBinaries()
	if err != nil {
		return nil, err
	}
	st, cfg, shims, err := in.load()
	if err != nil {
		return nil, err
	}
	// Kata's side first: a handler is pointed at our shim only once its
	// shim's drop-in (naming the delegate) is in place, and a failure here
	// leaves containerd's configuration as it was.
	ready, err := in.writeKataDropIns(ctx, st, shims)
	if err != nil {
		return nil, err
	}
	var takeOver []Shim
	for _, s := range shims {
		if ready[s.Handler] {
			takeOver = append(takeOver, s)
		}
	}
	ctrdChanged, err := in.takeOver(ctx, cfg, st, takeOver)
	if err != nil {
		return nil, err
	}
	// containerd caches the shim binary it resolved: restart after a new
	// binary too. A restart that failed is tried again on the next pass.
	st.RestartPending = st.RestartPending || ctrdChanged || (binsChanged && len(takeOver) > 0)
	if err := in.saveState(st); err != nil {
		return nil, err
	}
	if st.RestartPending {
		log.G(ctx).WithField("command", in.opt.RestartCommand).Info("restarting containerd")
		if err := in.opt.runRestart(ctx); err != nil {
			return nil, err
		}
		st.RestartPending = false
		if err := in.saveState(st); err != nil {
			return nil, err
		}
	}
	if shims, err = in.refresh(); err != nil {
		return nil, err
	}
	reports, err := in.reports(ctx, shims)
	if err != nil {
		return nil, err
	}
	return reports, in.publish(ctx, reports)
}

// installBinaries copies our binaries into GUARD_PREFIX/bin, each replaced
// atomically and only when it differs.
func (in *Installer) installBinaries() (bool, error) {
	changed := false
	for _, b := range Binaries {
		dst := in.host.abs(filepath.Join(in.opt.GuardPrefix, "bin", b))
		if id, ok := idOf(dst); ok && id == in.installed[dst] {
			continue
		}
		src := filepath.Join(in.opt.ArtifactsDir, b)
		data, err := os.ReadFile(src)
		if err != nil {
			return false, fmt.Errorf("our binary %s: %w (ARTIFACTS_DIR)", b, err)
		}
		if cur, err := os.ReadFile(dst); err != nil || !bytes.Equal(cur, data) {
			if err := writeAtomic(dst, data, 0o755); err != nil {
				return false, err
			}
			changed = true
		}
		if id, ok := idOf(dst); ok {
			in.installed[dst] = id
		}
	}
	return changed, nil
}

// writeKataDropIns writes config.d/90-submount-guard.toml for each selected
// shim whose configuration kata-deploy has in place (its reinstall deletes
// runtimes/<shim>/ and makes it anew; we follow), and says which handlers
// have theirs.
func (in *Installer) writeKataDropIns(ctx context.Context, st *state, shims []Shim) (map[string]bool, error) {
	ready := map[string]bool{}
	for _, s := range shims {
		if !in.selected(s) {
			continue
		}
		if s.ConfigFile == "" {
			// Our shim would not know the delegate: leave the handler to Kata.
			log.G(ctx).WithField("handler", s.Handler).Warn("handler has no options.ConfigPath; not taken over")
			continue
		}
		main := in.host.abs(s.ConfigFile)
		if _, err := os.Stat(main); err != nil {
			log.G(ctx).WithError(err).WithField("shim", s.Name).Warn("shim configuration missing (kata-deploy reinstalling?); will retry")
			continue
		}
		base, err := baseHypervisors(main)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(filepath.Dir(s.ConfigFile), "config.d", KataDropIn)
		content := in.kataDropIn(&s, base)
		if cur, err := os.ReadFile(in.host.abs(p)); err != nil || !bytes.Equal(cur, content) {
			if _, err := os.Stat(in.host.abs(filepath.Dir(p))); errors.Is(err, os.ErrNotExist) && !contains(st.CreatedDirs, filepath.Dir(p)) {
				st.CreatedDirs = append(st.CreatedDirs, filepath.Dir(p))
			}
			if err := writeAtomic(in.host.abs(p), content, 0o644); err != nil {
				return nil, err
			}
			log.G(ctx).WithFields(log.Fields{"shim": s.Name, "file": p}).Info("wrote Kata drop-in")
		}
		if !contains(st.KataDropIns, p) {
			st.KataDropIns = append(st.KataDropIns, p)
		}
		ready[s.Handler] = true
	}
	return ready, nil
}

// reports says, for each shim, whether it is guarded and protected.
func (in *Installer) reports(ctx context.Context, shims []Shim) ([]ShimReport, error) {
	binsOK := true
	for _, b := range Binaries {
		if _, err := os.Stat(in.host.abs(filepath.Join(in.opt.GuardPrefix, "bin", b))); err != nil {
			binsOK = false
		}
	}
	var out []ShimReport
	for _, s := range shims {
		r := ShimReport{Shim: s.Name, Handler: s.Handler, Delegate: s.Delegate, ConfigFile: s.ConfigFile}
		r.TakenOver = s.RuntimePath == in.ours()
		if s.ConfigFile != "" {
			p := in.host.abs(filepath.Join(filepath.Dir(s.ConfigFile), "config.d", KataDropIn))
			if cur, err := os.ReadFile(p); err == nil {
				if base, err := baseHypervisors(in.host.abs(s.ConfigFile)); err == nil {
					r.DropIn = bytes.Equal(cur, in.kataDropIn(&s, base))
				}
			}
		}
		r.Guarded = r.TakenOver && r.DropIn && binsOK
		in.evaluate(ctx, &s, &r)
		out = append(out, r)
	}
	return out, nil
}

// refresh re-reads containerd's configuration, so that reports describe
// what containerd will run after Apply's edits.
func (in *Installer) refresh() ([]Shim, error) {
	_, _, shims, err := in.load()
	return shims, err
}

// load reads the installer's state and containerd's configuration, and
// finds the Kata shims in them.
func (in *Installer) load() (*state, *ctrdConfig, []Shim, error) {
	st, err := in.loadState()
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := loadContainerd(in.host, in.opt.ContainerdConf)
	if err != nil {
		return nil, nil, nil, err
	}
	return st, cfg, in.discover(cfg, st), nil
}

// Status reports every Kata shim of the node as it is now.
func (in *Installer) Status(ctx context.Context) ([]ShimReport, error) {
	shims, err := in.refresh()
	if err != nil {
		return nil, err
	}
	return in.reports(ctx, shims)
}

// publish writes the NFD feature file and the node labels.
func (in *Installer) publish(ctx context.Context, reports []ShimReport) error {
	labels := nodeLabels(reports)
	nfd := in.host.abs(filepath.Join(in.opt.NFDFeaturesDir, NFDFeatureFile))
	content := nfdContent(labels)
	// Without NFD's directory there is no NFD to read the file: we do not
	// make the directory (a later reconcile writes the file once it exists).
	if _, err := os.Stat(filepath.Dir(nfd)); err == nil {
		if cur, err := os.ReadFile(nfd); err != nil || !bytes.Equal(cur, content) {
			if err := writeAtomic(nfd, content, 0o644); err != nil {
				return err
			}
		}
	}
	if in.opt.Nodes == nil || in.opt.NodeName == "" {
		return nil
	}
	current, err := in.opt.Nodes.Labels(ctx, in.opt.NodeName)
	if err != nil {
		return err
	}
	if p := labelPatch(current, labels); len(p) > 0 {
		return in.opt.Nodes.PatchLabels(ctx, in.opt.NodeName, p)
	}
	return nil
}
