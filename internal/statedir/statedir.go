package statedir

import "path/filepath"

// Default is state_dir when Kata's configuration does not set it; on tmpfs,
// so plans and caches go with a reboot, as the sandboxes and maybe the
// kernel images they describe do.
const Default = "/run/kata-containers/submount-guard"

// PlanPath is where the plan of sandboxID lives.
func PlanPath(stateDir, sandboxID string) string {
	return filepath.Join(stateDir, sandboxID+".json")
}

// statusDir holds the recovery status files.
func statusDir(stateDir string) string { return filepath.Join(stateDir, "status") }

// StatusPath is where the recovery status of sandboxID's share lives.
func StatusPath(stateDir, sandboxID string) string {
	return filepath.Join(statusDir(stateDir), sandboxID+".json")
}

// KernelCacheDir holds the facts of inspected guest kernel images.
func KernelCacheDir(stateDir string) string { return filepath.Join(stateDir, "kernel-cache") }

// VirtiofsdCacheDir holds what was learnt about upstream virtiofsd binaries.
func VirtiofsdCacheDir(stateDir string) string { return filepath.Join(stateDir, "virtiofsd-cache") }

// DelegateCacheDir holds the identities of delegate shims.
func DelegateCacheDir(stateDir string) string { return filepath.Join(stateDir, "delegate-cache") }
