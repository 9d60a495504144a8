package verdict

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJudgeEvidenceRanking(t *testing.T) {
	btfFixed := Report{BTFPresent: true, BTFHasFUSE: true, BTFHasFix: true, BTFHasSubmounts: true}
	btfVuln := Report{BTFPresent: true, BTFHasFUSE: true, BTFHasSubmounts: true}
	btfNoFUSE := Report{BTFPresent: true}
	with := func(r Report, release, banner string) Report {
		r.Release, r.Banner = release, banner
		return r
	}
	for _, tc := range []struct {
		name     string
		rep      Report
		fixed    []string
		verdict  Verdict
		evidence Evidence
		reason   []string // substrings the reason must carry
	}{
		{
			name: "btf fixed, version agrees", rep: with(btfFixed, "6.1.76", bannerFixed61),
			verdict: Fixed, evidence: EvidenceBTF, reason: []string{"fuse_submount_lookup"},
		},
		{
			name: "lying-vulnerable: version says vulnerable, btf says fixed", rep: with(btfFixed, "6.1.69", bannerVuln61),
			verdict: Fixed, evidence: EvidenceBTF,
		},
		{
			name: "lying-fixed: version says fixed, btf says vulnerable", rep: with(btfVuln, "6.1.192", "Linux version 6.1.192 (x) (gcc) #1 SMP"),
			verdict: Vulnerable, evidence: EvidenceBTF, reason: []string{"although its version 6.1.192 says fixed", "6.1.70+"},
		},
		{
			name: "btf outranks override", rep: with(btfVuln, "6.1.0-18-amd64", bannerDebian), fixed: []string{"6.1.0-18-amd64"},
			verdict: Vulnerable, evidence: EvidenceBTF, reason: []string{`fixed_releases entry "6.1.0-18-amd64" was ignored`},
		},
		{
			name: "override outranks version", rep: with(Report{}, "6.1.69", bannerVuln61), fixed: []string{"6.1.69"},
			verdict: Fixed, evidence: EvidenceOverride, reason: []string{"fixed_releases", "no BTF"},
		},
		{
			name: "override needs the exact release", rep: with(Report{}, "6.1.69", bannerVuln61), fixed: []string{"6.1.6", "6.1.69-1"},
			verdict: Vulnerable, evidence: EvidenceVersion, reason: []string{"add 6.1.69 to fixed_releases"},
		},
		{
			name: "override when btf has no fuse", rep: with(btfNoFUSE, "5.15.0-91-generic", ""), fixed: []string{"5.15.0-91-generic"},
			verdict: Fixed, evidence: EvidenceOverride, reason: []string{"no FUSE types"},
		},
		{
			name: "btf without fuse proves nothing", rep: with(btfNoFUSE, "6.1.0-18-amd64", bannerDebian),
			verdict: Fixed, evidence: EvidenceVersion, reason: []string{"Debian 6.1.76-1", "no FUSE types"},
		},
		{
			name: "btf without fuse, vulnerable version", rep: with(btfNoFUSE, "5.10.0-32-cloud-amd64", "5.10.0-32-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 5.10.223-1 (2024-08-10)"),
			verdict: Vulnerable, evidence: EvidenceVersion, reason: []string{"5.10.223", "upgrade"},
		},
		{
			name: "btf: fuse without submounts, old kernel", rep: with(Report{BTFPresent: true, BTFHasFUSE: true}, "5.4.0-150-generic", ""),
			verdict: Unaffected, evidence: EvidenceBTF, reason: []string{"auto_submounts"},
		},
		{
			name: "btf: fuse without submounts but the version claims them", rep: with(Report{BTFPresent: true, BTFHasFUSE: true}, "6.1.69", bannerVuln61),
			verdict: Vulnerable, evidence: EvidenceBTF,
		},
		{
			name: "no banner, no btf", rep: Report{},
			verdict: Unknown, evidence: EvidenceNone, reason: []string{"no \"Linux version\" banner"},
		},
		{
			name: "btf fixed without any banner", rep: btfFixed,
			verdict: Fixed, evidence: EvidenceBTF,
		},
		{
			name: "payload not examined", rep: with(Report{Note: "header only: payload not decompressed"}, "6.1.0-18-amd64", bannerDebian),
			verdict: Fixed, evidence: EvidenceVersion, reason: []string{"BTF not examined: header only"},
		},
		{
			name: "ubuntu abi name", rep: with(Report{}, "5.15.0-91-generic", "Linux version 5.15.0-91-generic (buildd@x) (gcc) #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023"),
			verdict: Unknown, evidence: EvidenceNone, reason: []string{"distro ABI name", "fixed_releases"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rep
			Judge(&r, tc.fixed)
			require.Equal(t, tc.verdict, r.Verdict, r.Reason)
			require.Equal(t, tc.evidence, r.Evidence, r.Reason)
			for _, s := range tc.reason {
				require.Contains(t, r.Reason, s)
			}
		})
	}
}

// TestNeverFalseFixed: over every combination of facts, "fixed" only comes
// from BTF showing the fix, an operator override, or a version at or after
// a fixed release; and BTF showing FUSE without the fix is never "fixed".
func TestNeverFalseFixed(t *testing.T) {
	releases := []string{"", "6.1.69", "6.1.70", "6.1.0-18-amd64", "5.10.209", "6.7.0-rc5", "5.4.1", "6.8.0-31-generic", "junk"}
	banners := []string{"", bannerDebian, "Linux version 6.1.0-17-amd64 (x) #1 SMP Debian 6.1.69-1 (2023-12-30)"}
	for _, release := range releases {
		for _, banner := range banners {
			for mask := range 32 {
				r := Report{
					Release: release, Banner: banner,
					BTFPresent: mask&1 != 0, BTFHasFUSE: mask&2 != 0, BTFHasFix: mask&4 != 0, BTFHasSubmounts: mask&8 != 0,
				}
				listed := mask&16 != 0
				var fixed []string
				if listed {
					fixed = []string{release}
				}
				Judge(&r, fixed)
				btfShowsFUSE := r.BTFPresent && r.BTFHasFUSE
				if btfShowsFUSE && !r.BTFHasFix {
					require.NotEqual(t, Fixed, r.Verdict, "%+v", r)
				}
				if r.Verdict != Fixed {
					continue
				}
				switch r.Evidence {
				case EvidenceBTF:
					require.True(t, btfShowsFUSE && r.BTFHasFix, "%+v", r)
				case EvidenceOverride:
					require.True(t, listed && release != "" && !btfShowsFUSE, "%+v", r)
				case EvidenceVersion:
					require.False(t, btfShowsFUSE || listed && release != "", "%+v", r)
					vf := readVersion(r.Release, r.Banner)
					require.Equal(t, Fixed, versionVerdict(vf.Version), "%+v", r)
				default:
					t.Fatalf("fixed with evidence %q: %+v", r.Evidence, r)
				}
			}
		}
	}
}

// TestSeverity: a vulnerable kernel outweighs an unknown one, which
// outweighs one that predates submounts, which outweighs a fixed one.
func TestSeverity(t *testing.T) {
	order := []Verdict{Fixed, Unaffected, Unknown, Vulnerable}
	for i := 1; i < len(order); i++ {
		if order[i].Severity() <= order[i-1].Severity() {
			t.Errorf("%s (%d) must outweigh %s (%d)", order[i], order[i].Severity(), order[i-1], order[i-1].Severity())
		}
	}
}
