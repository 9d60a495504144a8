package fssandbox

import "golang.org/x/sys/unix"

const (
	auditArch     = unix.AUDIT_ARCH_AARCH64
	cloneFlagsArg = 0
)

func archSyscalls() []uintptr { return []uintptr{unix.SYS_FSTATAT} }
