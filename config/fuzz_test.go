package config

import (
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
		file, err := Parse("fuzz.toml", data)
		if err != nil {
			require.Nil(t, file)
			require.True(t, errdefs.IsInvalidArgument(err), "unclassified error: %v", err)
			return
		}
		require.NotNil(t, file)
		require.Contains(t, policyWords, string(file.Guard.OnVulnerable))
		require.Contains(t, policyWords, string(file.Guard.OnUnknown))
		require.Contains(t, protectionWords, string(file.Guard.VirtiofsProtection))
		for name := range file.Hypervisors {
			require.Contains(t, HypervisorNames(), name)
		}
	})
}

// FuzzRuntimeOptions feeds arbitrary stdin bytes to the runtime-options
// decoder.
func FuzzRuntimeOptions(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\n\x19runtimeoptions.v1.Options\x12\x0c\x12\n/a/b.toml"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := RuntimeOptionsConfigPath(data)
		if err != nil {
			require.True(t, errdefs.IsInvalidArgument(err), "unclassified error: %v", err)
		}
	})
}
