package buildinfo

import (
	"runtime/debug"
	"sync"
)

// revision is stamped by the Makefile
// (-X github.com/kata-submount-guard/kata-submount-guard/internal/buildinfo.revision=...).
var revision string

// Revision is the source revision this binary was built from: the
// Makefile's stamp, else the vcs.revision the Go toolchain recorded (with
// "-modified" when the tree had uncommitted changes), else "" (a test
// binary, or a build outside a repository).
func Revision() string { return fromBuild() }

var fromBuild = sync.OnceValue(func() string {
	if rev := pick(revision, nil); rev != "" {
		return rev // stamped: no need to parse the build info
	}
	bi, _ := debug.ReadBuildInfo()
	return pick(revision, bi)
})

// pick chooses the revision from the stamp and the toolchain's record.
func pick(stamp string, bi *debug.BuildInfo) string {
	if stamp != "" && stamp != "unknown" {
		return stamp
	}
	if bi == nil {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-modified"
	}
	return rev
}
