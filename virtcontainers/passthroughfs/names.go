package passthroughfs

import (
	"strings"
	"syscall"
)

// checkName validates a name the guest sends for a new or existing directory
// entry: one path component, not "." or "..", no NUL, at most NAME_MAX bytes.
// The kernel never sends anything else for these operations, so anything else
// is a hostile or broken guest.
func checkName(name string) syscall.Errno {
	switch {
	case name == "", name == ".", name == "..":
		return syscall.EINVAL
	case len(name) > nameMax:
		return syscall.ENAMETOOLONG
	case strings.IndexByte(name, '/') >= 0, strings.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	}
	return 0
}

// checkLookupName is checkName for LOOKUP, which may also name "." and ".."
// (NFS-style export lookups); those are resolved inside the parent so that
// they cannot leave the shared directory.
func checkLookupName(name string) syscall.Errno {
	if name == "." || name == ".." {
		return 0
	}
	return checkName(name)
}

// checkLinkTarget validates a symlink's target: stored verbatim (the guest
// resolves it, never we), but it must be a C string of at most PATH_MAX.
func checkLinkTarget(target string) syscall.Errno {
	switch {
	case target == "":
		return syscall.ENOENT
	case len(target) >= syscall.PathMax:
		return syscall.ENAMETOOLONG
	case strings.IndexByte(target, 0) >= 0:
		return syscall.EINVAL
	}
	return 0
}
