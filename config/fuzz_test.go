package config

import (
	"regexp"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// FuzzParse feeds arbitrary bytes to the loader: it must not panic, an error
// must be classified, and a success must carry a valid policy.
func FuzzParse(f *testing.F) {
	f.Add([]byte(qemuConfig("/k")))
	f.Add([]byte(qemuConfig("/k") + "\n[submount_guard]\non_vulnerable = \"refuse\"\nfixed_releases = [\"6.1.0-18-amd64\"]\nstate_dir = \"/run/x\"\n"))
	f.Add([]byte("[hypervisor.clh]\nkernel = 1\n"))
	f.Add([]byte("submount_guard = 3"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := parse("fuzz.toml", data)
		if err != nil {
			require.Nil(t, file)
			require.True(t, errdefs.IsInvalidArgument(err), "unclassified error: %v", err)
			return
		}
		require.NotNil(t, file)
		require.Contains(t, policyWords, string(file.Guard.OnVulnerable))
		require.Contains(t, policyWords, string(file.Guard.OnUnknown))
		require.True(t, file.Guard.VirtiofsProtection.Valid(), file.Guard.VirtiofsProtection)
		for name := range file.Hypervisors {
			require.Contains(t, hypervisorNames(), name)
		}
	})
}

// lineRE is the regular expression tomlLinePrefix implements by hand.
var lineRE = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "[^"]*"\))?: `)

// FuzzTOMLLinePrefix: tomlLinePrefix matches what lineRE matches.
func FuzzTOMLLinePrefix(f *testing.F) {
	for _, msg := range []string{
		`toml: line 3 (last key "hypervisor.qemu.kernel"): incompatible types: TOML value has type int64; destination has type string`,
		`toml: line 12: expected a table`, `toml: line : x`, `toml: line 1 (last key "a"`, `toml: line 1 (last key "a\n"): b`,
		`toml: line 1 (last key "a") : b`, `toml: line 1 (last key "a"): `, `toml: line 1: `, `toml: line 1:x`, `toml: line 1 (last key "a"`,
	} {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		prefix, line, ok := tomlLinePrefix(msg)
		if m := lineRE.FindStringSubmatch(msg); m == nil {
			require.False(t, ok, "%q", msg)
		} else {
			require.True(t, ok, "%q", msg)
			require.Equal(t, m[0], prefix, "%q", msg)
			require.Equal(t, m[1], line, "%q", msg)
		}
	})
}
