package verdict

import (
	"fmt"
	"math"
	"regexp"
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

var (
	releaseRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?(.*)$`)
	rcRE      = regexp.MustCompile(`^-rc(\d+)(.*)$`)
)

// parseRelease reads a `uname -r` release. abi is true when the release only
// tells the line, as distro ABI names do ("6.1.0-18-amd64",
// "5.15.0-91-generic", "5.14.0-362.el9.x86_64"): the stable level is not in it.
func parseRelease(release string) (v upstreamVersion, abi bool, ok bool) {
	m := releaseRE.FindStringSubmatch(release)
	if m == nil {
		return upstreamVersion{}, false, false
	}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	sub := 0
	if m[3] != "" {
		var err error
		if sub, err = strconv.Atoi(m[3]); err != nil {
			return upstreamVersion{}, false, false
		}
	}
	rest := m[4]
	if rc := rcRE.FindStringSubmatch(rest); rc != nil && sub == 0 {
		n, err := strconv.Atoi(rc[1])
		if err != nil || n == 0 {
			return upstreamVersion{}, false, false
		}
		v.Lo = linePos{RC: n}
		v.Hi = v.Lo
		if rc[2] != "" {
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

var (
	debianTailRE = regexp.MustCompile(`^Debian (\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)(\S*) \(\d{4}-\d{2}-\d{2}\)`)
	ubuntuRE     = regexp.MustCompile(`#\d+(?:~[0-9.]+)?-Ubuntu\b`)
)

// distroTail finds the distribution's package version at the end of a banner:
// Debian writes "... Debian 6.1.76-1 (2024-02-01)". Ubuntu only writes
// "#101-Ubuntu", with no upstream version; tail is then "Ubuntu" and upstream
// empty.
func distroTail(banner string) (tail, upstream string) {
	// The tail ends the banner; earlier "Debian" words name the compiler.
	if i := strings.LastIndex(banner, "Debian "); i >= 0 && (i == 0 || banner[i-1] == ' ') {
		if m := debianTailRE.FindStringSubmatch(banner[i:]); m != nil {
			return "Debian " + m[1] + m[2], strings.Replace(m[1], "~rc", "-rc", 1)
		}
	}
	if strings.Contains(banner, "-Ubuntu") && ubuntuRE.MatchString(banner) {
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
