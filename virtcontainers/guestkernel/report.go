package guestkernel

import "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"

// The report, its verdict and the options live in package verdict, which
// links no parser, so that the shim can judge a cached image without this
// package; these names keep guestkernel's API whole.
type (
	// Report is what inspecting one kernel image found; see verdict.Report.
	Report = verdict.Report
	// Verdict says whether a guest kernel carries the fix.
	Verdict = verdict.Verdict
	// Evidence names what decided a verdict.
	Evidence = verdict.Evidence
	// Options tune Inspect.
	Options = verdict.Options
)

// Verdicts and evidence, as in package verdict.
const (
	Fixed      = verdict.Fixed
	Vulnerable = verdict.Vulnerable
	Unaffected = verdict.Unaffected
	Unknown    = verdict.Unknown

	EvidenceBTF      = verdict.EvidenceBTF
	EvidenceOverride = verdict.EvidenceOverride
	EvidenceVersion  = verdict.EvidenceVersion
	EvidenceNone     = verdict.EvidenceNone
)

// DefaultMaxDecompressed caps how many bytes a compressed kernel payload may
// expand to when Options.MaxDecompressed is zero.
const DefaultMaxDecompressed = verdict.DefaultMaxDecompressed
