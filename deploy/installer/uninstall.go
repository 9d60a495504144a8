package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/log"
)

// Uninstall undoes Apply: containerd's main file gets back the bytes it had
// before our last edit when nobody changed it since (else only our edits
// are reverted), our drop-ins, feature file, labels and binaries go, and
// containerd is restarted if its configuration changed.
func (in *Installer) Uninstall(ctx context.Context) error {
	st, err := in.loadState()
	if err != nil {
		return err
	}
	ctrdChanged := false
	if cfg, err := loadContainerd(in.host, in.opt.ContainerdConf); err == nil {
		if ctrdChanged, err = in.restoreContainerd(ctx, cfg, st); err != nil {
			return err
		}
		if ctrdChanged {
			// Recorded before restarting: an uninstall run again after a
			// failed restart has no file left to change, but must restart.
			st.RestartPending = true
			if err := in.saveState(st); err != nil {
				return err
			}
		}
		for _, s := range in.discover(cfg, st) {
			if s.ConfigFile != "" {
				p := filepath.Join(filepath.Dir(s.ConfigFile), "config.d", KataDropIn)
				if !contains(st.KataDropIns, p) {
					st.KataDropIns = append(st.KataDropIns, p)
				}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, p := range st.KataDropIns {
		if err := os.Remove(in.host.abs(p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	for _, d := range st.CreatedDirs {
		_ = os.Remove(in.host.abs(d)) // only if empty: anything else is not ours
	}
	if err := os.Remove(in.host.abs(filepath.Join(in.opt.NFDFeaturesDir, NFDFeatureFile))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if in.opt.Nodes != nil && in.opt.NodeName != "" {
		current, err := in.opt.Nodes.Labels(ctx, in.opt.NodeName)
		if err != nil {
			return err
		}
		if p := labelPatch(current, nil); len(p) > 0 {
			if err := in.opt.Nodes.PatchLabels(ctx, in.opt.NodeName, p); err != nil {
				return err
			}
		}
	}
	if st.RestartPending {
		// Before the binaries go: containerd must not be left pointing at them.
		if err := in.opt.runRestart(ctx); err != nil {
			return err
		}
	}
	for _, b := range Binaries {
		if err := os.Remove(in.host.abs(filepath.Join(in.opt.GuardPrefix, "bin", b))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Remove(in.statePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Empty directories only: whatever else is there is not ours.
	for _, d := range []string{"bin", "state", "containerd", ""} {
		_ = os.Remove(in.host.abs(filepath.Join(in.opt.GuardPrefix, d)))
	}
	log.G(ctx).Info("kata-submount-guard uninstalled")
	return nil
}

// restoreContainerd gives containerd's configuration back.
func (in *Installer) restoreContainerd(ctx context.Context, cfg *ctrdConfig, st *state) (bool, error) {
	main := cfg.Files[0]
	doc := main.Data
	if st.Containerd != nil && st.Containerd.Path == main.Path && bytes.Equal(main.Data, st.Containerd.After) {
		doc = st.Containerd.Before
	} else {
		// Changed since our edit (kata-deploy reinstalled, or an
		// administrator): revert our own values only.
		for _, r := range cfg.runtimes(st.CtrdDropIn) {
			if r.PathFile != main.Path || r.RuntimePath != in.ours() {
				continue
			}
			var err error
			doc, err = editTOML(in.host.abs(main.Path), doc, runtimeKey(r.PluginID, r.Handler, "runtime_path"), tomlString(in.delegateOf(st, r)))
			if err != nil {
				return false, fmt.Errorf("restore handler %s: %w", r.Handler, err)
			}
		}
	}
	changed := false
	if st.CtrdDropIn != "" {
		// The byte-for-byte copy has no import of ours; removing it from doc
		// is then a no-op.
		var imports []string
		if d, err := parseImports(doc); err == nil {
			imports = d
		}
		if err := in.removeCtrdDropIn(main.Path, &doc, imports, st.CtrdDropIn); err != nil {
			return false, err
		}
		changed = true
	}
	if !bytes.Equal(doc, main.Data) {
		if err := writeAtomic(in.host.abs(main.Path), doc, 0); err != nil {
			return false, err
		}
		log.G(ctx).WithField("file", main.Path).Info("containerd configuration restored")
		changed = true
	}
	return changed, nil
}

func parseImports(doc []byte) ([]string, error) {
	var d struct {
		Imports []string `toml:"imports"`
	}
	_, err := decodeTOML(doc, &d)
	return d.Imports, err
}
