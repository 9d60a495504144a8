package plan

import (
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Action is what sandbox creation does about the guest kernel.
type Action string

const (
	Allow  Action = "allow"
	Warn   Action = "warn"
	Refuse Action = "refuse"
)

// formatVersion is the version of the plan's JSON form this build writes
// and the newest it reads. Bump it when a change would make an older
// kata-virtiofsd misread a plan; it only grows.
const formatVersion = 1

// Plan is the decision for one sandbox. It is written to
// <state_dir>/<sandbox-id>.json at sandbox creation and read back by
// kata-virtiofsd; its JSON form is a contract between our binaries.
type Plan struct {
	// FormatVersion is the version of this JSON form that wrote the plan
	// (Write sets FormatVersion); a plan written before the field existed
	// reads as version 1.
	FormatVersion int    `json:"format_version"`
	SandboxID     string `json:"sandbox_id"`
	// ConfigPath is the Kata configuration file that was used, and
	// ConfigSource what chose it (annotation, runtime-options, env, default).
	ConfigPath   string `json:"config_path"`
	ConfigSource string `json:"config_source"`
	// DelegateKind is the Kata shim whose rules chose ConfigPath (go-3,
	// go-4, runtime-rs): a config.DelegateKind, held as a string so that
	// kata-virtiofsd reads plans without package config.
	DelegateKind string `json:"delegate_kind"`
	Hypervisor   string `json:"hypervisor"`
	// HypervisorCandidates lists every hypervisor table when the file holds
	// several (Kata picks one at random); the plan is the strictest outcome.
	HypervisorCandidates []string `json:"hypervisor_candidates,omitempty"`

	Kernel verdict.Report `json:"kernel"`
	// KernelInspected is false when the decision needed no inspection (no
	// virtio-fs share, or the guard is off); Kernel then only names the
	// image.
	KernelInspected bool `json:"kernel_inspected"`

	Action Action `json:"action"`
	// Reason is one line a person can act on.
	Reason string `json:"reason"`

	Protection        protection.Protection `json:"protection"`
	UpstreamVirtiofsd string                `json:"upstream_virtiofsd"`
	// Unprotected is true when the sandbox goes on with a vulnerable or
	// unknown kernel and no protection: deliberately (virtiofs_protection =
	// none) or because the protection asked for cannot apply
	// (ProtectionUnavailable). UnprotectedReason says why and what to set.
	Unprotected           bool   `json:"unprotected"`
	ProtectionUnavailable bool   `json:"protection_unavailable,omitempty"`
	UnprotectedReason     string `json:"unprotected_reason,omitempty"`

	Created time.Time `json:"created"`
}
