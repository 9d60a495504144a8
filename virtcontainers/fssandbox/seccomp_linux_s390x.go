package fssandbox

import "golang.org/x/sys/unix"

const (
	auditArch = unix.AUDIT_ARCH_S390X
	// s390x's clone takes the stack first and the flags second.
	cloneFlagsArg = 1
)

func archSyscalls() []uintptr { return []uintptr{unix.SYS_NEWFSTATAT, unix.SYS_EPOLL_WAIT} }
