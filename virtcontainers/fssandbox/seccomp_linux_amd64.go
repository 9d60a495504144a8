package fssandbox

import "golang.org/x/sys/unix"

const (
	auditArch     = unix.AUDIT_ARCH_X86_64
	cloneFlagsArg = 0
)

// archSyscalls: amd64 also has the older calls Go's runtime and os package
// may make here.
func archSyscalls() []uintptr {
	return []uintptr{unix.SYS_NEWFSTATAT, unix.SYS_EPOLL_WAIT, unix.SYS_ARCH_PRCTL}
}
