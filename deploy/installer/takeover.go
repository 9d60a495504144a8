package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/log"
)

// takeOver points each shim's handler at our shim: by editing runtime_path
// in the main file when kata-deploy set it there (containerd < 2.0, whose
// imports replace whole plugin tables), else by our drop-in imported after
// kata-deploy's.
func (in *Installer) takeOver(ctx context.Context, cfg *ctrdConfig, st *state, shims []Shim) (bool, error) {
	main := cfg.Files[0]
	doc := main.Data
	var dropIn []Shim
	for _, s := range shims {
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
