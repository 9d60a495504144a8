package installer

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// CRI plugin IDs under which containerd's configuration holds runtimes:
// schema version 3+ (containerd 2.x), 2, and the legacy unversioned one.
var criPluginIDs = []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"}

// shimBinary is the name of every Kata shim and of ours.
const shimBinary = "containerd-shim-kata-v2"

// ctrdFile is one file of containerd's configuration as containerd reads it:
// the main file, then each import in order.
type ctrdFile struct {
	Path string // host path
	Data []byte
	Doc  map[string]any
}

// ctrdConfig is containerd's configuration: the main file and its imports,
// in the order containerd merges them.
type ctrdConfig struct {
	Files []ctrdFile
	// Imports are the main file's imports as written.
	Imports []string
}

// loadContainerd reads the main file (host path main) and every file it
// imports, resolved as containerd resolves them: relative to the main
// file's directory, globs expanded in lexical order, missing files skipped
// by globs only.
func loadContainerd(h hostFS, main string) (*ctrdConfig, error) {
	first, err := readCtrdFile(h, main)
	if err != nil {
		return nil, err
	}
	cfg := &ctrdConfig{Files: []ctrdFile{first}}
	raw, _ := first.Doc["imports"].([]any)
	for _, r := range raw {
		s, ok := r.(string)
		if !ok {
			return nil, fmt.Errorf("%s: imports: %v is not a string", h.abs(main), r)
		}
		cfg.Imports = append(cfg.Imports, s)
		p := s
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(main), p)
		}
		p = filepath.Clean(p)
		paths := []string{p}
		if strings.Contains(p, "*") {
			matches, err := filepath.Glob(h.abs(p))
			if err != nil {
				return nil, fmt.Errorf("%s: imports %q: %w", h.abs(main), s, err)
			}
			paths = paths[:0]
			for _, m := range matches {
				paths = append(paths, h.rel(m))
			}
			sort.Strings(paths)
		}
		for _, p := range paths {
			f, err := readCtrdFile(h, p)
			if err != nil {
				return nil, fmt.Errorf("%s imports it: %w", main, err)
			}
			cfg.Files = append(cfg.Files, f)
		}
	}
	return cfg, nil
}

func readCtrdFile(h hostFS, path string) (ctrdFile, error) {
	data, err := os.ReadFile(h.abs(path))
	if err != nil {
		return ctrdFile{}, fmt.Errorf("read containerd configuration: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return ctrdFile{}, fmt.Errorf("containerd configuration %s: %w", h.abs(path), err)
	}
	return ctrdFile{Path: path, Data: data, Doc: doc}, nil
}

// ctrdRuntime is one runtime handler as containerd will see it after
// merging every file.
type ctrdRuntime struct {
	Handler  string
	PluginID string
	// RuntimePath is the effective runtime_path, and PathFile the file that
	// sets it last (the one containerd uses).
	RuntimePath string
	PathFile    string
	// KataPath is the last runtime_path set by a file other than
	// exclude (our drop-in): the Kata shim the handler would run without us.
	KataPath   string
	KataFile   string
	ConfigPath string
}

// runtimePath is the key path of a handler's runtime_path.
func runtimeKey(pluginID, handler string, key ...string) []string {
	return append([]string{"plugins", pluginID, "containerd", "runtimes", handler}, key...)
}

// runtimes lists every runtime handler of every CRI plugin ID, with its
// effective runtime_path and options.ConfigPath. Files whose host path is
// exclude are merged for RuntimePath but not for KataPath.
func (c *ctrdConfig) runtimes(exclude string) []ctrdRuntime {
	byKey := map[string]*ctrdRuntime{}
	var order []string
	for _, f := range c.Files {
		for _, id := range criPluginIDs {
			rts, ok := getPath(f.Doc, "plugins", id, "containerd", "runtimes")
			if !ok {
				continue
			}
			m, _ := rts.(map[string]any)
			names := make([]string, 0, len(m))
			for n := range m {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, name := range names {
				k := id + "\x00" + name
				r := byKey[k]
				if r == nil {
					r = &ctrdRuntime{Handler: name, PluginID: id}
					byKey[k] = r
					order = append(order, k)
				}
				if v, ok := getPath(f.Doc, runtimeKey(id, name, "runtime_path")...); ok {
					s, _ := v.(string)
					r.RuntimePath, r.PathFile = s, f.Path
					if f.Path != exclude {
						r.KataPath, r.KataFile = s, f.Path
					}
				}
				if v, ok := getPath(f.Doc, runtimeKey(id, name, "options", "ConfigPath")...); ok {
					r.ConfigPath, _ = v.(string)
				}
			}
		}
	}
	out := make([]ctrdRuntime, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}
