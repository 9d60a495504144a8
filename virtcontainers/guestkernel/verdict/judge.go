package verdict

import (
	"fmt"
	"slices"
)

// fixedLines names the upstream releases carrying c4d361f66ac9, for reasons.
const fixedLines = "6.7+, 6.6.8+, 6.1.70+ or 5.15.146+"

// statusAt is what upstream history says about one version of a line:
// submounts arrived in 5.10 (so earlier kernels are unaffected) and the fix
// in 6.7, 6.6.8, 6.1.70 and 5.15.146; other lines ended unfixed.
func statusAt(major, minor int, p linePos) Verdict {
	fixedFrom := func(first int) Verdict {
		if p.RC == 0 && p.Sub >= first {
			return Fixed
		}
		return Vulnerable
	}
	switch {
	case major < 5 || major == 5 && minor < 10:
		return Unaffected
	case major == 5 && minor == 15:
		return fixedFrom(146)
	case major == 6 && minor == 1:
		return fixedFrom(70)
	case major == 6 && minor == 6:
		return fixedFrom(8)
	case major == 6 && minor == 7:
		// The fix was committed on 2023-12-04, after 6.7-rc4 was tagged
		// (2023-12-03), and was in mainline before 6.6.8 took it
		// (2023-12-20), so before rc7 (2023-12-24). Whether rc5 or rc6
		// have it is not told by the version.
		switch {
		case p.RC == 0 || p.RC >= 7:
			return Fixed
		case p.RC <= 4:
			return Vulnerable
		default:
			return Unknown
		}
	case major > 6 || major == 6 && minor > 7:
		return Fixed
	default: // 5.10–5.14, 5.16–6.0, 6.2–6.5: never fixed
		return Vulnerable
	}
}

// versionVerdict judges every version the string allows; if they disagree
// the version cannot decide. Status only changes once or twice along a
// line, in one direction, so the two ends of the range suffice.
func versionVerdict(v upstreamVersion) Verdict {
	lo := statusAt(v.Major, v.Minor, v.Lo)
	hi := statusAt(v.Major, v.Minor, v.Hi)
	if lo != hi {
		return Unknown
	}
	return lo
}

// Judge fills the Verdict, Evidence and Reason of a report whose facts are
// set. BTF that shows FUSE decides; then the operator's fixed releases; then
// the version string.
func Judge(r *Report, fixedReleases []string) {
	vf := readVersion(r.Release, r.Banner)
	r.Version = vf.Version.String()
	r.DistroTail = vf.Tail
	listed := r.Release != "" && slices.Contains(fixedReleases, r.Release)
	verdict, evidence, reason := decide(r, vf, listed)
	r.Verdict, r.Evidence, r.Reason = verdict, evidence, reason
}

func decide(r *Report, vf versionFacts, listed bool) (Verdict, Evidence, string) {
	ignored := ""
	if listed {
		ignored = fmt.Sprintf("; the fixed_releases entry %q was ignored because BTF outranks it", r.Release)
	}
	if r.BTFPresent && r.BTFHasFUSE {
		switch {
		case r.BTFHasFix:
			return Fixed, EvidenceBTF, "the kernel's BTF defines struct fuse_submount_lookup: the FUSE submount fix (c4d361f66ac9) is built in"
		case !r.BTFHasSubmounts && (!vf.Known || versionVerdict(vf.Version) == Unaffected):
			// Only trusted when the version does not claim submounts: a
			// renamed member must not turn a 5.10+ kernel "unaffected".
			return Unaffected, EvidenceBTF, "the kernel's BTF shows FUSE without submount support (struct fuse_conn has no auto_submounts): the submount bug cannot occur" + ignored
		default:
			return Vulnerable, EvidenceBTF, "the kernel's BTF shows FUSE with submounts but without struct fuse_submount_lookup" +
				versionSays(vf) + ": the fix c4d361f66ac9 is missing; use a guest kernel with the fix (" + fixedLines + ")" + ignored
		}
	}
	noBTF := btfAbsence(r)
	if listed {
		return Fixed, EvidenceOverride, fmt.Sprintf("release %s is listed in fixed_releases (operator override; %s)", r.Release, noBTF)
	}
	if !vf.Known {
		if r.Release == "" {
			return Unknown, EvidenceNone, "no \"Linux version\" banner found in the image and " + noBTF +
				"; list the kernel's release in fixed_releases if you know it carries c4d361f66ac9"
		}
		return Unknown, EvidenceNone, fmt.Sprintf("release %q is not a Linux version number and %s; add it to fixed_releases if you know it carries c4d361f66ac9", r.Release, noBTF)
	}
	v := vf.Version
	from := ""
	if vf.Tail != "" && !vf.ABI && v.exact() && v.String() != r.Release {
		from = " (from " + vf.Tail + ")"
	}
	switch versionVerdict(v) {
	case Unaffected:
		if vf.ABI {
			return Unknown, EvidenceNone, fmt.Sprintf("release %s is a vendor ABI name of the %d.%d line, which upstream predates FUSE submounts, but vendors may backport them; %s; add it to fixed_releases if you know it is not affected", r.Release, v.Major, v.Minor, noBTF)
		}
		return Unaffected, EvidenceVersion, fmt.Sprintf("version %s%s predates FUSE submounts (5.10): the submount bug cannot occur", v, from)
	case Fixed:
		return Fixed, EvidenceVersion, fmt.Sprintf("version %s%s carries the fix upstream (%s); %s", v, from, fixedLines, noBTF)
	case Vulnerable:
		return Vulnerable, EvidenceVersion, fmt.Sprintf("version %s%s lacks the FUSE submount fix upstream (fixed in %s); upgrade the guest kernel, or if your vendor backported c4d361f66ac9 add %s to fixed_releases", v, from, fixedLines, r.Release)
	default:
		if vf.ABI {
			return Unknown, EvidenceNone, fmt.Sprintf("release %s is a distro ABI name and the image does not tell its upstream %d.%d stable level; %s; add it to fixed_releases if your vendor confirms c4d361f66ac9", r.Release, v.Major, v.Minor, noBTF)
		}
		return Unknown, EvidenceNone, fmt.Sprintf("version %s%s cannot tell whether c4d361f66ac9 is included; %s; add %s to fixed_releases if you know it is", v, from, noBTF, r.Release)
	}
}

// versionSays adds what the version string claims, to show a lie.
func versionSays(vf versionFacts) string {
	if !vf.Known {
		return ""
	}
	switch versionVerdict(vf.Version) {
	case Fixed:
		return fmt.Sprintf(", although its version %s says fixed", vf.Version)
	case Unaffected:
		return fmt.Sprintf(", although its version %s predates submounts", vf.Version)
	}
	return ""
}

// btfAbsence says why BTF could not decide, for reasons.
func btfAbsence(r *Report) string {
	switch {
	case r.BTFPresent:
		return "its BTF has no FUSE types (FUSE is probably a module) so BTF cannot confirm"
	case r.Note != "":
		return "BTF not examined: " + r.Note
	default:
		return "the image has no BTF to confirm (CONFIG_DEBUG_INFO_BTF with FUSE built in would)"
	}
}
