package installer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/BurntSushi/toml"

	"github.com/kata-submount-guard/kata-submount-guard/config"
)

// baseHypervisor is what a shim's configuration says of one hypervisor
// table without our drop-in: what our drop-in has to build on.
type baseHypervisor struct {
	VirtioFSDaemon string
	ValidPaths     []string
	SharedFS       string
}

// baseHypervisors merges the shim's configuration file and its config.d
// entries other than ours, key by key and last wins as Kata does, for the
// keys our drop-in derives from.
func baseHypervisors(mainPath string) (map[string]*baseHypervisor, error) {
	files := []string{mainPath}
	dir := filepath.Join(filepath.Dir(mainPath), config.DropInDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() != KataDropIn {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	out := map[string]*baseHypervisor{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		var d struct {
			Hypervisor map[string]map[string]any `toml:"hypervisor"`
		}
		if err := toml.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for name, keys := range d.Hypervisor {
			// A table a drop-in alone sets is a table Kata has too.
			h := out[name]
			if h == nil {
				h = &baseHypervisor{}
				out[name] = h
			}
			if v, ok := keys["virtio_fs_daemon"].(string); ok {
				h.VirtioFSDaemon = v
			}
			if v, ok := keys["shared_fs"].(string); ok {
				h.SharedFS = v
			}
			if v, ok := keys["valid_virtio_fs_daemon_paths"].([]any); ok {
				h.ValidPaths = h.ValidPaths[:0:0]
				for _, p := range v {
					if s, ok := p.(string); ok {
						h.ValidPaths = append(h.ValidPaths, s)
					}
				}
			}
		}
	}
	return out, nil
}

// servesVirtiofsd says whether a table's sandboxes share their files through
// a virtiofsd process that kata-virtiofsd can stand in for. nydusd
// (virtio-fs-nydus), Dragonball's inline virtio-fs, 9p and none do not.
func servesVirtiofsd(h *baseHypervisor) bool {
	return h.VirtioFSDaemon != "" && (h.SharedFS == "" || h.SharedFS == config.SharedFSVirtioFS)
}

// kataDropIn renders config.d/90-submount-guard.toml for one shim.
func (in *Installer) kataDropIn(s *Shim, base map[string]*baseHypervisor) []byte {
	ours := filepath.Join(in.opt.GuardPrefix, "bin", "kata-virtiofsd")
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by kata-submount-guard-deploy for containerd's %s handler: Kata's shim\n", s.Handler)
	b.WriteString("# stays where kata-deploy put it and ours hands off to it. Its uninstall removes this file.\n")
	b.WriteString("[submount_guard]\n")
	fmt.Fprintf(&b, "delegate_shim = %s\n", tomlString(s.Delegate))
	names := make([]string, 0, len(base))
	for n := range base {
		names = append(names, n)
	}
	sort.Strings(names)
	var tables bytes.Buffer
	upstream := ""
	for _, n := range names {
		h := base[n]
		if !servesVirtiofsd(h) {
			continue
		}
		if upstream == "" && h.VirtioFSDaemon != ours {
			upstream = h.VirtioFSDaemon
		}
		valid := append([]string{}, h.ValidPaths...)
		if !contains(valid, ours) {
			valid = append(valid, ours)
		}
		fmt.Fprintf(&tables, "\n[hypervisor.%s]\n", dotted([]string{n}))
		fmt.Fprintf(&tables, "virtio_fs_daemon = %s\n", tomlString(ours))
		fmt.Fprintf(&tables, "valid_virtio_fs_daemon_paths = %s\n", tomlStrings(valid))
	}
	if upstream != "" {
		// kata-virtiofsd runs the daemon kata-deploy configured.
		fmt.Fprintf(&b, "upstream_virtiofsd = %s\n", tomlString(upstream))
	}
	b.Write(tables.Bytes())
	return b.Bytes()
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
