package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/containerd/log"
)

// Installer installs, re-applies and removes the guard on one node.
type Installer struct {
	opt  Options
	host hostFS
	// verdicts caches kernel verdicts by path, size, mtime and fixed_releases
	// so that a reconcile every few seconds does not re-read kernels.
	verdicts map[string]string
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
	return &Installer{opt: opt, host: hostFS{root: opt.HostRoot}, verdicts: map[string]string{}, installed: map[string]fileID{}}
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

// state is what we changed, kept at GUARD_PREFIX/state/install.json so that
// Uninstall can undo it and a re-apply knows the delegates.
type state struct {
	// Containerd holds the main file's bytes before our last edit and
	// after it.
	Containerd *fileRecord `json:"containerd,omitempty"`
	// CtrdDropIn is our containerd drop-in, when kata-deploy uses drop-ins.
	CtrdDropIn string `json:"ctrd_drop_in,omitempty"`
	// Handlers maps each taken-over handler to its Kata shim.
	Handlers map[string]string `json:"handlers,omitempty"`
	// KataDropIns are the config.d files we wrote, CreatedDirs the
	// directories we had to make for them.
	KataDropIns []string `json:"kata_drop_ins,omitempty"`
	CreatedDirs []string `json:"created_dirs,omitempty"`
}

type fileRecord struct {
	Path   string `json:"path"`
	Before []byte `json:"before"`
	After  []byte `json:"after"`
}

func (in *Installer) ours() string { return filepath.Join(in.opt.GuardPrefix, "bin", shimBinary) }

func (in *Installer) statePath() string {
	return in.host.abs(filepath.Join(in.opt.GuardPrefix, "state", "install.json"))
}

func (in *Installer) loadState() (*state, error) {
	st := &state{Handlers: map[string]string{}}
	data, err := os.ReadFile(in.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read install state: %w", err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("install state %s: %w; remove it to start afresh", in.statePath(), err)
	}
	if st.Handlers == nil {
		st.Handlers = map[string]string{}
	}
	return st, nil
}

func (in *Installer) saveState(st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(in.statePath(), data, 0o600)
}

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
	st, err := in.loadState()
	if err != nil {
		return nil, err
	}
	cfg, err := loadContainerd(in.host, in.opt.ContainerdConf)
	if err != nil {
		return nil, err
	}
	shims := in.discover(cfg, st)
	ctrdChanged, err := in.takeOver(ctx, cfg, st, shims)
	if err != nil {
		return nil, err
	}
	if err := in.writeKataDropIns(ctx, st, shims); err != nil {
		return nil, err
	}
	if err := in.saveState(st); err != nil {
		return nil, err
	}
	if ctrdChanged || (binsChanged && len(shims) > 0) {
		// containerd caches the shim binary it resolved: restart after a new
		// binary too.
		log.G(ctx).WithField("command", in.opt.RestartCommand).Info("restarting containerd")
		if err := in.opt.runRestart(ctx); err != nil {
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

// takeOver points each shim's handler at our shim: by editing runtime_path
// in the main file when kata-deploy set it there (containerd < 2.0, whose
// imports replace whole plugin tables), else by our drop-in imported after
// kata-deploy's.
func (in *Installer) takeOver(ctx context.Context, cfg *ctrdConfig, st *state, shims []Shim) (bool, error) {
	main := cfg.Files[0]
	doc := main.Data
	var dropIn []Shim
	for _, s := range shims {
		if !in.selected(s) {
			continue
		}
		st.Handlers[s.Handler] = s.Delegate
		if s.KataFile != main.Path {
			dropIn = append(dropIn, s)
			continue
		}
		if s.RuntimePath == in.ours() && s.PathFile == main.Path {
			continue
		}
		var err error
		doc, err = editTOML(in.host.abs(main.Path), doc, runtimeKey(s.PluginID, s.Handler, "runtime_path"), tomlString(in.ours()))
		if err != nil {
			return false, fmt.Errorf("take over handler %s: %w", s.Handler, err)
		}
		log.G(ctx).WithFields(log.Fields{"handler": s.Handler, "file": main.Path}).Info("runtime_path set to our shim")
	}

	changed := false
	dropPath, importEntry, err := in.ctrdDropInPath(cfg, dropIn)
	if err != nil {
		return false, err
	}
	if importEntry != "" {
		if doc, err = in.ensureImportAfter(main.Path, doc, cfg.Imports, importEntry, dropIn); err != nil {
			return false, err
		}
	}
	if old := st.CtrdDropIn; old != "" && old != dropPath {
		if err := in.removeCtrdDropIn(main.Path, &doc, cfg.Imports, old); err != nil {
			return false, err
		}
		st.CtrdDropIn = ""
		changed = true
	}
	if dropPath != "" {
		content := ctrdDropInContent(dropIn, in.ours())
		cur, _ := os.ReadFile(in.host.abs(dropPath))
		if !bytes.Equal(cur, content) {
			if err := writeAtomic(in.host.abs(dropPath), content, 0o644); err != nil {
				return false, err
			}
			changed = true
		}
		st.CtrdDropIn = dropPath
	}

	if !bytes.Equal(doc, main.Data) {
		if st.Containerd == nil || st.Containerd.Path != main.Path || !bytes.Equal(st.Containerd.After, main.Data) {
			// Someone (kata-deploy) wrote the file since our last edit: what
			// they wrote is what Uninstall must give back.
			st.Containerd = &fileRecord{Path: main.Path, Before: main.Data}
		}
		st.Containerd.After = doc
		if err := writeAtomic(in.host.abs(main.Path), doc, 0); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// ctrdDropInPath says where our containerd drop-in goes for the handlers
// kata-deploy configured by drop-in, and the imports entry to add for it
// ("" when a glob import already reads it). Beside kata-deploy's file when
// a glob (conf.d) imports it, so that ours sorts after; else in
// GUARD_PREFIX, which kata-deploy's uninstall does not delete.
func (in *Installer) ctrdDropInPath(cfg *ctrdConfig, shims []Shim) (string, string, error) {
	if len(shims) == 0 {
		return "", "", nil
	}
	kataFile := shims[0].KataFile
	for _, s := range shims[1:] {
		if s.KataFile != kataFile {
			return "", "", fmt.Errorf("kata-deploy's handlers are split over %s and %s; don't know where to put ours", kataFile, s.KataFile)
		}
	}
	for _, imp := range cfg.Imports {
		if !strings.Contains(imp, "*") {
			continue
		}
		pattern := imp
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(cfg.Files[0].Path), pattern)
		}
		if ok, _ := filepath.Match(filepath.Clean(pattern), kataFile); ok {
			p := filepath.Join(filepath.Dir(kataFile), CtrdDropIn)
			if match, _ := filepath.Match(filepath.Clean(pattern), p); match && filepath.Base(p) > filepath.Base(kataFile) {
				return p, "", nil
			}
		}
	}
	p := filepath.Join(in.opt.GuardPrefix, "containerd", CtrdDropIn)
	return p, p, nil
}

func ctrdDropInContent(shims []Shim, ours string) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by kata-submount-guard-deploy: containerd runs kata-submount-guard's shim for these\n")
	b.WriteString("# Kata handlers; every other setting is kata-deploy's. Its uninstall removes this file.\n")
	for _, s := range shims {
		fmt.Fprintf(&b, "\n[%s]\nruntime_path = %s\n", dotted(runtimeKey(s.PluginID, s.Handler)), tomlString(ours))
	}
	return b.Bytes()
}

// ensureImportAfter puts entry in the main file's imports right after the
// entry that reads kata-deploy's file (a later import wins).
func (in *Installer) ensureImportAfter(mainPath string, doc []byte, imports []string, entry string, shims []Shim) ([]byte, error) {
	kataIdx, ourIdx := -1, -1
	for i, imp := range imports {
		p := imp
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(mainPath), p)
		}
		if filepath.Clean(p) == shims[0].KataFile {
			kataIdx = i
		}
		if imp == entry {
			ourIdx = i
		}
	}
	if ourIdx > kataIdx && kataIdx >= 0 {
		return doc, nil
	}
	var next []string
	for _, imp := range imports {
		if imp != entry {
			next = append(next, imp)
		}
	}
	next = append(next, entry)
	return editTOML(in.host.abs(mainPath), doc, []string{"imports"}, tomlStrings(next))
}

// removeCtrdDropIn deletes our containerd drop-in and its imports entry.
func (in *Installer) removeCtrdDropIn(mainPath string, doc *[]byte, imports []string, path string) error {
	if contains(imports, path) {
		var next []string
		for _, imp := range imports {
			if imp != path {
				next = append(next, imp)
			}
		}
		d, err := editTOML(in.host.abs(mainPath), *doc, []string{"imports"}, tomlStrings(next))
		if err != nil {
			return err
		}
		*doc = d
	}
	if err := os.Remove(in.host.abs(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeKataDropIns writes config.d/90-submount-guard.toml for each shim
// whose configuration kata-deploy has in place (its reinstall deletes
// runtimes/<shim>/ and makes it anew; we follow).
func (in *Installer) writeKataDropIns(ctx context.Context, st *state, shims []Shim) error {
	for _, s := range shims {
		if !in.selected(s) {
			continue
		}
		if s.ConfigFile == "" {
			log.G(ctx).WithField("handler", s.Handler).Warn("handler has no options.ConfigPath; no drop-in written")
			continue
		}
		main := in.host.abs(s.ConfigFile)
		if _, err := os.Stat(main); err != nil {
			log.G(ctx).WithError(err).WithField("shim", s.Name).Warn("shim configuration missing (kata-deploy reinstalling?); will retry")
			continue
		}
		base, err := baseHypervisors(main)
		if err != nil {
			return err
		}
		p := filepath.Join(filepath.Dir(s.ConfigFile), "config.d", KataDropIn)
		content := in.kataDropIn(&s, base)
		if cur, err := os.ReadFile(in.host.abs(p)); err == nil && bytes.Equal(cur, content) {
			continue
		}
		if _, err := os.Stat(in.host.abs(filepath.Dir(p))); errors.Is(err, os.ErrNotExist) && !contains(st.CreatedDirs, filepath.Dir(p)) {
			st.CreatedDirs = append(st.CreatedDirs, filepath.Dir(p))
		}
		if err := writeAtomic(in.host.abs(p), content, 0o644); err != nil {
			return err
		}
		if !contains(st.KataDropIns, p) {
			st.KataDropIns = append(st.KataDropIns, p)
		}
		log.G(ctx).WithFields(log.Fields{"shim": s.Name, "file": p}).Info("wrote Kata drop-in")
	}
	return nil
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
	st, err := in.loadState()
	if err != nil {
		return nil, err
	}
	cfg, err := loadContainerd(in.host, in.opt.ContainerdConf)
	if err != nil {
		return nil, err
	}
	return in.discover(cfg, st), nil
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

// writeAtomic replaces path by a temporary file renamed over it; mode 0
// keeps the current file's mode (0644 for a new one).
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if mode == 0 {
		mode = 0o644
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
