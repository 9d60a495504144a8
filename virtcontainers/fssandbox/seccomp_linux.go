package fssandbox

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// SeccompAction is what the confined server's seccomp filter does with a
// system call outside its allow-list (virtiofsd's --seccomp).
type SeccompAction string

const (
	// SeccompKill kills the process (SECCOMP_RET_KILL_PROCESS). virtiofsd's
	// default, and ours.
	SeccompKill SeccompAction = "kill"
	// SeccompLog lets the call run and logs it to the kernel log (audit
	// type 1326): for finding what the allow-list lacks.
	SeccompLog SeccompAction = "log"
	// SeccompTrap sends SIGSYS, which makes a Go program crash with a
	// stack trace.
	SeccompTrap SeccompAction = "trap"
	// SeccompNone installs no filter.
	SeccompNone SeccompAction = "none"
)

// ParseSeccompAction accepts virtiofsd's --seccomp values; empty is
// SeccompKill, virtiofsd's default.
func ParseSeccompAction(s string) (SeccompAction, error) {
	switch a := SeccompAction(s); a {
	case "":
		return SeccompKill, nil
	case SeccompKill, SeccompLog, SeccompTrap, SeccompNone:
		return a, nil
	}
	return "", fmt.Errorf("seccomp action %q: want kill, log, trap or none: %w", s, errdefs.ErrInvalidArgument)
}

func (a SeccompAction) ret() (uint32, error) {
	switch a {
	case SeccompKill:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case SeccompLog:
		return unix.SECCOMP_RET_LOG, nil
	case SeccompTrap:
		return unix.SECCOMP_RET_TRAP, nil
	}
	return 0, fmt.Errorf("seccomp action %q installs no filter: %w", a, errdefs.ErrInvalidArgument)
}

// RestrictSyscalls installs the allow-list filter (see allowedSyscalls) on
// every thread of the process (SECCOMP_FILTER_FLAG_TSYNC); threads started
// later inherit it. Call it after Setup, which sets no_new_privs, once the
// serving setup is done. SeccompNone does nothing.
func RestrictSyscalls(action SeccompAction) error {
	if action == SeccompNone {
		return nil
	}
	deny, err := action.ret()
	if err != nil {
		return err
	}
	prog, err := buildFilter(auditArch, allowedSyscalls(), deny)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := syscall.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("sandbox: install seccomp filter (%s): %w", action, errno)
	}
	if r != 0 {
		return fmt.Errorf("sandbox: install seccomp filter (%s): thread %d cannot take it", action, r)
	}
	return nil
}

// seccomp_data offsets (include/uapi/linux/seccomp.h).
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// argLow is the offset of the low 32 bits of argument i (64 bits each).
func argLow(i uint32) uint32 {
	off := offArgs + 8*i
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) == 0 {
		off += 4 // big-endian
	}
	return off
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// Namespace flags a server thread never creates: with them clone or unshare
// could make a user namespace, in which the process holds every capability.
const newNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// buildFilter returns a classic BPF seccomp program: calls of another
// architecture get deny; unshare is allowed with exactly CLONE_FS (the xattr
// fallback's private working directory), clone without namespace flags (Go
// starts threads with clone), clone3 answers ENOSYS so that a caller falls
// back to clone, whose flags the filter can read; every call in allowed is
// allowed; anything else gets deny.
func buildFilter(arch uint32, allowed []uintptr, deny uint32) ([]unix.SockFilter, error) {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jst = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	p := []unix.SockFilter{
		stmt(ld, offArch),
		jump(jeq, arch, 1, 0),
		stmt(ret, deny),
		stmt(ld, offNr),
	}
	// unshare(CLONE_FS) only.
	p = append(p,
		jump(jeq, uint32(unix.SYS_UNSHARE), 0, 4),
		stmt(ld, argLow(0)),
		jump(jeq, unix.CLONE_FS, 0, 1),
		stmt(ret, allow),
		stmt(ret, deny),
	)
	// clone without new namespaces (s390x passes the flags second).
	p = append(p,
		jump(jeq, uint32(unix.SYS_CLONE), 0, 4),
		stmt(ld, argLow(cloneFlagsArg)),
		jump(jst, newNamespaces, 0, 1),
		stmt(ret, deny),
		stmt(ret, allow),
	)
	p = append(p,
		jump(jeq, uint32(unix.SYS_CLONE3), 0, 1),
		stmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS)),
	)
	n := len(allowed)
	if n > 255 {
		return nil, fmt.Errorf("seccomp allow-list of %d calls: a jump reaches at most 255", n)
	}
	for i, nr := range allowed {
		// Over the remaining comparisons and the deny to the allow.
		p = append(p, jump(jeq, uint32(nr), uint8(n-i), 0))
	}
	p = append(p, stmt(ret, deny), stmt(ret, allow))
	if len(p) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp filter of %d instructions is too long", len(p))
	}
	return p, nil
}
