package config

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

// guardTable is the name of our own table in Kata's configuration file.
const guardTable = "submount_guard"

// Policy is what sandbox creation does when a guest kernel is vulnerable or
// its fix status is unknown.
type Policy string

const (
	PolicyRefuse Policy = "refuse"
	PolicyWarn   Policy = "warn"
	PolicyOff    Policy = "off"
)

// Defaults of [submount_guard]. README's "[submount_guard]" section says why.
const (
	defaultOnVulnerable       = PolicyWarn
	defaultOnUnknown          = PolicyWarn
	defaultVirtiofsProtection = protection.Recover
	DefaultDelegateShim       = "/opt/kata/bin/containerd-shim-kata-v2.upstream"
	DefaultUpstreamVirtiofsd  = "/opt/kata/libexec/virtiofsd"
)

const (
	// DelegateRuntimeName is Kata's runtime CLI, looked for beside
	// delegate_shim when delegate_runtime is not set.
	DelegateRuntimeName = "kata-runtime"
	// UpstreamSuffix marks an upstream binary renamed to make room for ours.
	UpstreamSuffix = ".upstream"
)

// Guard is the [submount_guard] policy with defaults applied.
type Guard struct {
	OnVulnerable       Policy                `json:"on_vulnerable" toml:"on_vulnerable"`
	OnUnknown          Policy                `json:"on_unknown" toml:"on_unknown"`
	VirtiofsProtection protection.Protection `json:"virtiofs_protection" toml:"virtiofs_protection"`
	// FixedReleases are exact kernel releases (uname -r) an operator vouches
	// carry the fix.
	FixedReleases []string `json:"fixed_releases" toml:"fixed_releases"`
	DelegateShim  string   `json:"delegate_shim" toml:"delegate_shim"`
	// DelegateKind pins which Kata shim delegate_shim is (its rules choose
	// the configuration file); auto asks the binary's --version.
	DelegateKind DelegateKind `json:"delegate_kind" toml:"delegate_kind"`
	// DelegateRuntime is Kata's own kata-runtime, which our kata-runtime's
	// check and env run and extend; empty means beside delegate_shim (see
	// DelegateRuntimeCandidates).
	DelegateRuntime   string `json:"delegate_runtime" toml:"delegate_runtime"`
	UpstreamVirtiofsd string `json:"upstream_virtiofsd" toml:"upstream_virtiofsd"`
	StateDir          string `json:"state_dir" toml:"state_dir"`
}

// defaultGuard returns the policy used when [submount_guard] is absent.
func defaultGuard() Guard {
	return Guard{
		OnVulnerable:       defaultOnVulnerable,
		OnUnknown:          defaultOnUnknown,
		VirtiofsProtection: defaultVirtiofsProtection,
		FixedReleases:      []string{},
		DelegateShim:       DefaultDelegateShim,
		DelegateKind:       DelegateAuto,
		UpstreamVirtiofsd:  DefaultUpstreamVirtiofsd,
		StateDir:           statedir.Default,
	}
}

// DelegateRuntimeCandidates are where Kata's kata-runtime is looked for, in
// order: delegate_runtime if set, else beside delegate_shim, where Kata
// installs both: kata-runtime.upstream first when the shim itself was renamed
// *.upstream (the CLI may have been renamed with it to make room for ours),
// then kata-runtime. The caller takes the first that exists and is not
// itself.
func (g Guard) DelegateRuntimeCandidates() []string {
	if g.DelegateRuntime != "" {
		return []string{g.DelegateRuntime}
	}
	dir := filepath.Dir(g.DelegateShim)
	plain := filepath.Join(dir, DelegateRuntimeName)
	if strings.HasSuffix(g.DelegateShim, UpstreamSuffix) {
		return []string{plain + UpstreamSuffix, plain}
	}
	return []string{plain}
}

var (
	policyWords = []string{string(PolicyRefuse), string(PolicyWarn), string(PolicyOff)}
	guardKeys   = []string{"on_vulnerable", "on_unknown", "virtiofs_protection", "fixed_releases", "delegate_shim", "delegate_kind", "delegate_runtime", "upstream_virtiofsd", "state_dir"}
)

// parseGuard applies defaults and validates the merged [submount_guard]
// table; origin names the file that set a key, for errors.
func parseGuard(table map[string]any, origin func(key string) string) (Guard, error) {
	g := defaultGuard()
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := table[k]
		file := origin(guardTable + "." + k)
		bad := func(reason string, allowed []string) error {
			return &ValueError{File: file, Table: guardTable, Key: k, Value: v, Reason: reason, Allowed: allowed}
		}
		switch k {
		case "on_vulnerable", "on_unknown":
			s, ok := v.(string)
			if !ok || !contains(policyWords, s) {
				return Guard{}, bad("", policyWords)
			}
			if k == "on_vulnerable" {
				g.OnVulnerable = Policy(s)
			} else {
				g.OnUnknown = Policy(s)
			}
		case "virtiofs_protection":
			s, ok := v.(string)
			if !ok || !protection.Protection(s).Valid() {
				return Guard{}, bad("", protectionWords())
			}
			g.VirtiofsProtection = protection.Protection(s)
		case "delegate_kind":
			s, ok := v.(string)
			if !ok || !contains(DelegateKinds(), s) {
				return Guard{}, bad("which Kata shim delegate_shim is; auto asks its --version", DelegateKinds())
			}
			g.DelegateKind = DelegateKind(s)
		case "fixed_releases":
			list, ok := v.([]any)
			if !ok {
				return Guard{}, bad("want an array of kernel release strings (uname -r)", nil)
			}
			rels := make([]string, 0, len(list))
			for _, e := range list {
				s, ok := e.(string)
				if !ok || s == "" || strings.ContainsAny(s, " \t\r\n") {
					return Guard{}, bad("each entry must be one non-empty kernel release (uname -r), such as \"6.1.0-18-amd64\"", nil)
				}
				rels = append(rels, s)
			}
			g.FixedReleases = rels
		case "delegate_shim", "delegate_runtime", "upstream_virtiofsd", "state_dir":
			s, ok := v.(string)
			if !ok || s == "" || !filepath.IsAbs(s) {
				return Guard{}, bad("want an absolute path", nil)
			}
			s = filepath.Clean(s)
			switch k {
			case "delegate_shim":
				g.DelegateShim = s
			case "delegate_runtime":
				g.DelegateRuntime = s
			case "upstream_virtiofsd":
				g.UpstreamVirtiofsd = s
			default:
				g.StateDir = s
			}
		default:
			return Guard{}, &ValueError{File: file, Table: guardTable, Key: k, Value: v, Reason: "unknown key", Allowed: guardKeys}
		}
	}
	return g, nil
}

// protectionWords lists the values virtiofs_protection accepts, for errors.
func protectionWords() []string {
	var words []string
	for _, p := range protection.All() {
		words = append(words, string(p))
	}
	return words
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// formatValue renders a decoded TOML value the way it would be written.
func formatValue(v any) string {
	switch t := v.(type) {
	case string:
		return fmt.Sprintf("%q", t)
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		return "{...}"
	default:
		return fmt.Sprintf("%v", t)
	}
}
