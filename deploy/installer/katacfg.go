package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
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

// Verdicts, worst first, as the label shows them.
var verdictRank = map[string]int{
	string(guestkernel.Vulnerable): 0, string(guestkernel.Unknown): 1,
	string(guestkernel.Unaffected): 2, string(guestkernel.Fixed): 3,
}

func worse(a, b string) string {
	if a == "" || verdictRank[b] < verdictRank[a] {
		return b
	}
	return a
}

// evaluate fills r.Verdict, r.Protected and r.Reason from the shim's
// configuration as Kata merges it (ours included) and its guest kernels.
func (in *Installer) evaluate(ctx context.Context, s *Shim, r *ShimReport) {
	r.Verdict = string(guestkernel.Unknown)
	f, err := config.Load(in.host.abs(s.ConfigFile))
	if err != nil {
		r.Reason = fmt.Sprintf("configuration: %v", err)
		return
	}
	if len(f.Hypervisors) == 0 {
		r.Reason = fmt.Sprintf("%s has no [hypervisor.*] table", s.ConfigFile)
		return
	}
	names := make([]string, 0, len(f.Hypervisors))
	for n := range f.Hypervisors {
		names = append(names, n)
	}
	sort.Strings(names)
	verdict, protected := "", true
	var why []string
	for _, n := range names {
		h := f.Hypervisors[n]
		v, reason := in.kernelVerdict(ctx, f, h)
		verdict = worse(verdict, v)
		ok, whyNot := in.tableProtected(r.Guarded, n, f.Guard, h, v)
		if !ok {
			protected = false
			why = append(why, fmt.Sprintf("[hypervisor.%s] kernel %s: %s", n, reason, whyNot))
		}
	}
	r.Verdict, r.Protected = verdict, protected
	r.Reason = strings.Join(why, "; ")
}

// kernelVerdict inspects a table's guest kernel on the host.
func (in *Installer) kernelVerdict(ctx context.Context, f *config.File, h config.Hypervisor) (string, string) {
	kernel := h.Kernel
	if kernel == "" {
		kernel = filepath.Join(in.opt.KataPrefix, "share/kata-containers/vmlinuz.container")
	}
	resolved, err := in.host.resolve(kernel)
	if err != nil {
		return string(guestkernel.Unknown), fmt.Sprintf("%s cannot be read (%v)", kernel, err)
	}
	key := fmt.Sprint(resolved, f.Guard.FixedReleases)
	if st, err := os.Stat(in.host.abs(resolved)); err == nil {
		key += fmt.Sprint(st.Size(), st.ModTime().UnixNano())
	}
	if v, ok := in.verdicts[key]; ok {
		return v, kernel + " " + v
	}
	rep, err := guestkernel.Inspect(ctx, in.host.abs(resolved), guestkernel.Options{FixedReleases: f.Guard.FixedReleases})
	if err != nil {
		return string(guestkernel.Unknown), fmt.Sprintf("%s cannot be read (%v)", kernel, err)
	}
	in.verdicts[key] = string(rep.Verdict)
	return string(rep.Verdict), kernel + " " + string(rep.Verdict)
}

// tableProtected says whether sandboxes booted from one hypervisor table are
// safe from the bug, and if not, why.
func (in *Installer) tableProtected(guarded bool, name string, g config.Guard, h config.Hypervisor, verdict string) (bool, string) {
	if verdict == string(guestkernel.Fixed) || verdict == string(guestkernel.Unaffected) {
		return true, ""
	}
	switch {
	case name == config.HypervisorFirecracker || name == config.HypervisorRemote:
		return true, ""
	case h.SharedFS != "" && h.SharedFS != config.SharedFSVirtioFS && h.SharedFS != config.SharedFSVirtioFSNydus:
		return true, "" // no virtio-fs, no submounts
	case !guarded:
		return false, "kata-submount-guard does not guard this handler"
	}
	policy := g.OnVulnerable
	if verdict == string(guestkernel.Unknown) {
		policy = g.OnUnknown
	}
	if policy == config.PolicyRefuse {
		return true, "" // such sandboxes are refused
	}
	if g.VirtiofsProtection == config.ProtectionNone {
		return false, "virtiofs_protection = none"
	}
	if h.SharedFS == config.SharedFSVirtioFSNydus || h.VirtioFSDaemon != filepath.Join(in.opt.GuardPrefix, "bin", "kata-virtiofsd") {
		return false, fmt.Sprintf("virtio_fs_daemon %q is not kata-virtiofsd", h.VirtioFSDaemon)
	}
	return true, ""
}
