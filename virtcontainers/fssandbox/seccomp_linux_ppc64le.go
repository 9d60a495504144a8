package fssandbox

import "golang.org/x/sys/unix"

const (
	auditArch     = unix.AUDIT_ARCH_PPC64LE
	cloneFlagsArg = 0
)

func archSyscalls() []uintptr { return []uintptr{unix.SYS_NEWFSTATAT, unix.SYS_EPOLL_WAIT} }
