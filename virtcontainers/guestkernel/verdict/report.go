package verdict

// Verdict says whether a guest kernel carries the FUSE submount fix
// (Linux c4d361f66ac9).
type Verdict string

const (
	// Fixed: the kernel carries the fix.
	Fixed Verdict = "fixed"
	// Vulnerable: the kernel announces submounts but lacks the fix.
	Vulnerable Verdict = "vulnerable"
	// Unaffected: the kernel predates FUSE submounts (before 5.10).
	Unaffected Verdict = "unaffected"
	// Unknown: the evidence cannot decide; never reported as fixed.
	Unknown Verdict = "unknown"
)

// Severity orders verdicts by what a sandbox has to fear from its kernel:
// vulnerable 3, unknown 2, unaffected 1, fixed 0. Where several kernels
// are judged together (hypervisor tables, a node's label), the highest
// one speaks for them.
func (v Verdict) Severity() int {
	switch v {
	case Vulnerable:
		return 3
	case Unknown:
		return 2
	case Unaffected:
		return 1
	}
	return 0
}

// Evidence names what decided a verdict. BTF outranks an operator override,
// which outranks the version string.
type Evidence string

const (
	EvidenceBTF      Evidence = "btf"
	EvidenceOverride Evidence = "override"
	EvidenceVersion  Evidence = "version"
	EvidenceNone     Evidence = "none"
)

// Report is what inspecting one kernel image found. Its JSON form is the
// contract of `kata-runtime guest-kernel inspect --json`.
type Report struct {
	Path        string `json:"path"`
	Format      string `json:"format"`      // "elf", "bzimage", "arm64-image", "efi-zboot", ...
	Arch        string `json:"arch"`        // "x86_64", "arm64", "s390x", "ppc64le", "" if unknown
	Compression string `json:"compression"` // payload compression: "none", "gzip", "xz", "zstd", "lz4", ...
	Banner      string `json:"banner"`      // the whole "Linux version ..." line; for a bzImage whose payload was not read, the setup header's version string
	Release     string `json:"release"`     // uname -r
	Version     string `json:"version"`     // upstream version, e.g. "6.1.76", from a distro tail if the release is an ABI name
	DistroTail  string `json:"distro_tail,omitempty"`

	BTFPresent bool `json:"btf_present"`
	BTFHasFUSE bool `json:"btf_has_fuse"`
	BTFHasFix  bool `json:"btf_has_fix"`
	// BTFHasSubmounts: struct fuse_conn has auto_submounts (FUSE submounts,
	// Linux 5.10+). Meaningful only when BTFHasFUSE.
	BTFHasSubmounts bool `json:"btf_has_submounts"`
	// Note says what was not examined and why, e.g. a payload compression
	// this build cannot decompress.
	Note string `json:"note,omitempty"`

	Verdict  Verdict  `json:"verdict"`
	Evidence Evidence `json:"evidence"`
	Reason   string   `json:"reason"`
	Error    string   `json:"error,omitempty"`
}

// Facts is r with only what reading the image found: no path, and none of
// what Judge derives (version, verdict, evidence, reason) or an error. It is
// what the cache stores and what a verdict is judged from.
func (r *Report) Facts() Report {
	facts := *r
	facts.Path, facts.Verdict, facts.Evidence, facts.Reason, facts.Error = "", "", "", "", ""
	facts.Version, facts.DistroTail = "", ""
	return facts
}
