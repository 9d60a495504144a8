package verdict

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// upstreamVersion is what the version string tells about the upstream kernel:
// a line (major.minor) and the range of positions within it that the string
// allows. A plain "6.1.76" pins one position; a distro ABI name such as
// "6.1.0-18-amd64" only tells the line, so the range runs from .0 upwards.
type upstreamVersion struct {
	Major, Minor int
	Lo, Hi       linePos
}

// linePos orders a version within its line: release candidates come before
// the .0 release, then the stable updates.
type linePos struct {
	RC  int // > 0 for a release candidate (Sub is then 0)
	Sub int
}

// unbounded is the Hi of a range whose upper end the string does not tell.
var unbounded = linePos{Sub: math.MaxInt}

func (p linePos) less(q linePos) bool {
	return p.key() < q.key()
}

func (p linePos) key() int {
	if p.RC > 0 {
		return p.RC - 1_000_000
	}
	return p.Sub
}

// exact reports whether the string pinned a single version.
func (v upstreamVersion) exact() bool { return v.Lo == v.Hi }

// String is the form the Report shows: "6.1.76", "6.7-rc4", "6.1.76+" (at
// least 6.1.76) or "6.1.y" (stable level unknown).
func (v upstreamVersion) String() string {
	if v.Major == 0 && v.Minor == 0 {
		return ""
	}
	line := fmt.Sprintf("%d.%d", v.Major, v.Minor)
	at := func(p linePos) string {
		if p.RC > 0 {
			return fmt.Sprintf("%s-rc%d", line, p.RC)
		}
		return fmt.Sprintf("%s.%d", line, p.Sub)
	}
	switch {
	case v.exact():
		return at(v.Lo)
	case v.Hi == unbounded && v.Lo == (linePos{}):
		return line + ".y"
	case v.Hi == unbounded:
		return at(v.Lo) + "+"
	default:
		return at(v.Lo) + ".." + at(v.Hi)
	}
}

// The release, banner tail and Ubuntu tag are matched by hand rather than
// with package regexp: compiling the shim's six regular expressions at every
// start cost it 0.1 ms (BENCHMARKS.md). fuzz_test.go keeps the regular
// expressions each matcher implements and FuzzMatchers compares the two.

// splitRelease splits a release as the regular expression
// ^(\d+)\.(\d+)(?:\.(\d+))?(.*)$ does: major, minor, the optional third
// number and the rest, which holds no newline.
func splitRelease(s string) (major, minor, sub, rest string, ok bool) {
	if strings.IndexByte(s, '\n') >= 0 {
		return "", "", "", "", false
	}
	major, s = leadingDigits(s)
	if major == "" || !strings.HasPrefix(s, ".") {
		return "", "", "", "", false
	}
	minor, s = leadingDigits(s[1:])
	if minor == "" {
		return "", "", "", "", false
	}
	if strings.HasPrefix(s, ".") {
		if d, r := leadingDigits(s[1:]); d != "" {
			sub, s = d, r
		}
	}
	return major, minor, sub, s, true
}

// splitRC splits a release's rest as ^-rc(\d+)(.*)$ does (rest holds no
// newline): the release candidate's number and what follows.
func splitRC(rest string) (n, after string, ok bool) {
	r, ok := strings.CutPrefix(rest, "-rc")
	if !ok {
		return "", "", false
	}
	n, after = leadingDigits(r)
	return n, after, n != ""
}

// leadingDigits splits s after its leading ASCII digits.
func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// parseRelease reads a `uname -r` release. abi is true when the release only
// tells the line, as distro ABI names do ("6.1.0-18-amd64",
// "5.15.0-91-generic", "5.14.0-362.el9.x86_64"): the stable level is not in it.
func parseRelease(release string) (v upstreamVersion, abi bool, ok bool) {
	major, minor, subDigits, rest, ok := splitRelease(release)
	if !ok {
		return upstreamVersion{}, false, false
	}
	v.Major, _ = strconv.Atoi(major)
	v.Minor, _ = strconv.Atoi(minor)
	sub := 0
	if subDigits != "" {
		var err error
		if sub, err = strconv.Atoi(subDigits); err != nil {
			return upstreamVersion{}, false, false
		}
	}
	if rcDigits, after, isRC := splitRC(rest); isRC && sub == 0 {
		n, err := strconv.Atoi(rcDigits)
		if err != nil || n == 0 {
			return upstreamVersion{}, false, false
		}
		v.Lo = linePos{RC: n}
		v.Hi = v.Lo
		if after != "" {
			// "6.7.0-rc4-00012-gabcdef": commits after rc4, anything up to
			// the next release.
			v.Hi = unbounded
		}
		return v, false, true
	}
	v.Lo = linePos{Sub: sub}
	v.Hi = v.Lo
	switch {
	case rest == "":
	case sub == 0:
		// A suffix on a .0 release is a distro ABI name or a local build:
		// the stable level is unknown.
		v.Hi = unbounded
		abi = true
	case rest == "+":
		// "6.1.76+" is a git tree past the 6.1.76 tag.
		v.Hi = unbounded
	}
	return v, abi, true
}

// matchDebianTail matches the start of s as
// ^Debian (\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)(\S*) \(\d{4}-\d{2}-\d{2}\) does,
// returning its two groups: the package's upstream version and the rest of
// the package version.
func matchDebianTail(s string) (version, suffix string, ok bool) {
	s, ok = strings.CutPrefix(s, "Debian ")
	if !ok {
		return "", "", false
	}
	start := s
	major, s := leadingDigits(s)
	if major == "" || !strings.HasPrefix(s, ".") {
		return "", "", false
	}
	minor, s := leadingDigits(s[1:])
	if minor == "" {
		return "", "", false
	}
	if strings.HasPrefix(s, ".") {
		if d, r := leadingDigits(s[1:]); d != "" {
			s = r
		}
	}
	if strings.HasPrefix(s, "~rc") {
		if d, r := leadingDigits(s[3:]); d != "" {
			s = r
		}
	}
	version = start[:len(start)-len(s)]
	end := strings.IndexAny(s, " \t\n\f\r") // \S* stops at RE2's \s
	if end < 0 {
		return "", "", false
	}
	suffix, s = s[:end], s[end:]
	date, ok := strings.CutPrefix(s, " (")
	if !ok || len(date) < len("2006-01-02)") {
		return "", "", false
	}
	for i, c := range []byte(date[:len("2006-01-02)")]) {
		switch i {
		case 4, 7:
			ok = c == '-'
		case 10:
			ok = c == ')'
		default:
			ok = '0' <= c && c <= '9'
		}
		if !ok {
			return "", "", false
		}
	}
	return version, suffix, true
}

// hasUbuntuTag reports whether s contains a match of
// #\d+(?:~[0-9.]+)?-Ubuntu\b, Ubuntu's "#101-Ubuntu" or "#101~22.04.1-Ubuntu".
func hasUbuntuTag(s string) bool {
	for i := strings.IndexByte(s, '#'); i >= 0; i = next(s, i) {
		build, rest := leadingDigits(s[i+1:])
		if build == "" {
			continue
		}
		if r, ok := strings.CutPrefix(rest, "~"); ok {
			j := 0
			for j < len(r) && (r[j] == '.' || '0' <= r[j] && r[j] <= '9') {
				j++
			}
			if j == 0 {
				continue
			}
			rest = r[j:]
		}
		if r, ok := strings.CutPrefix(rest, "-Ubuntu"); ok && (r == "" || !isWordByte(r[0])) {
			return true
		}
	}
	return false
}

// next is the index of the '#' after the one at i in s, or -1.
func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '#')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// isWordByte: RE2's \b looks at ASCII word characters.
func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// distroTail finds the distribution's package version at the end of a banner:
// Debian writes "... Debian 6.1.76-1 (2024-02-01)". Ubuntu only writes
// "#101-Ubuntu", with no upstream version; tail is then "Ubuntu" and upstream
// empty.
func distroTail(banner string) (tail, upstream string) {
	// The tail ends the banner; earlier "Debian" words name the compiler.
	if i := strings.LastIndex(banner, "Debian "); i >= 0 && (i == 0 || banner[i-1] == ' ') {
		if version, suffix, ok := matchDebianTail(banner[i:]); ok {
			return "Debian " + version + suffix, strings.Replace(version, "~rc", "-rc", 1)
		}
	}
	if strings.Contains(banner, "-Ubuntu") && hasUbuntuTag(banner) {
		return "Ubuntu", ""
	}
	return "", ""
}

// versionFacts is what the release and banner tell about the upstream version.
type versionFacts struct {
	Version upstreamVersion
	Known   bool // the release parsed
	ABI     bool // the line came from an ABI name without an upstream version
	Tail    string
}

// readVersion derives the upstream version from the release and, when the
// release is an ABI name, from the distro tail of the banner.
func readVersion(release, banner string) versionFacts {
	var f versionFacts
	v, abi, ok := parseRelease(release)
	if !ok {
		return f
	}
	f.Version, f.ABI, f.Known = v, abi, true
	tail, upstream := distroTail(banner)
	f.Tail = tail
	if upstream == "" {
		return f
	}
	tv, _, ok := parseRelease(upstream)
	// A tail from another line would contradict the release: keep the release.
	if ok && tv.Major == v.Major && tv.Minor == v.Minor {
		f.Version, f.ABI = tv, false
	}
	return f
}
