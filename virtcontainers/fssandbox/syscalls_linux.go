package fssandbox

import "golang.org/x/sys/unix"

// allowedSyscalls is the seccomp allow-list of the confined server, for
// every architecture (archSyscalls adds each one's own). It was measured:
// strace -f over the sandboxed daemon serving the fsdaemon tests and over
// the passthrough file system under the POSIX suite (test/posix), then each
// call checked against the code that makes it. unshare and clone are not
// here: buildFilter allows them with restricted flags.
func allowedSyscalls() []uintptr {
	return append([]uintptr{
		// Go runtime: scheduler, memory, signals (preemption, forwarded
		// SIGTERM), timers, thread exit, GOMAXPROCS updates from cgroups.
		unix.SYS_FUTEX, unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_SCHED_YIELD,
		unix.SYS_MMAP, unix.SYS_MUNMAP, unix.SYS_MADVISE, unix.SYS_MPROTECT,
		unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGRETURN, unix.SYS_SIGALTSTACK,
		unix.SYS_GETTID, unix.SYS_GETPID, unix.SYS_TGKILL, unix.SYS_EXIT, unix.SYS_EXIT_GROUP,
		unix.SYS_CLOCK_GETTIME, unix.SYS_GETRANDOM, unix.SYS_SCHED_GETAFFINITY, unix.SYS_RESTART_SYSCALL,
		unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_CTL,
		// Descriptors, logging, the status pipe, eventfd kicks and calls.
		unix.SYS_READ, unix.SYS_WRITE, unix.SYS_CLOSE, unix.SYS_FCNTL, unix.SYS_DUP, unix.SYS_DUP3,
		unix.SYS_PREAD64, unix.SYS_PWRITE64, unix.SYS_PREADV, unix.SYS_PWRITEV, unix.SYS_PWRITEV2,
		// The vhost-user socket.
		unix.SYS_ACCEPT4, unix.SYS_RECVMSG, unix.SYS_SENDMSG, unix.SYS_GETSOCKOPT, unix.SYS_SETSOCKOPT,
		unix.SYS_GETSOCKNAME, unix.SYS_GETPEERNAME, unix.SYS_SHUTDOWN,
		// The passthrough file system.
		unix.SYS_OPENAT, unix.SYS_OPENAT2, unix.SYS_STATX, unix.SYS_FSTAT, unix.SYS_FSTATFS,
		unix.SYS_READLINKAT, unix.SYS_GETDENTS64, unix.SYS_LSEEK,
		unix.SYS_MKDIRAT, unix.SYS_MKNODAT, unix.SYS_SYMLINKAT, unix.SYS_LINKAT, unix.SYS_UNLINKAT, unix.SYS_RENAMEAT2,
		unix.SYS_FCHOWNAT, unix.SYS_FCHMODAT, unix.SYS_FCHMOD, unix.SYS_UTIMENSAT,
		unix.SYS_FTRUNCATE, unix.SYS_FALLOCATE, unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_SYNCFS,
		unix.SYS_COPY_FILE_RANGE, unix.SYS_NAME_TO_HANDLE_AT, unix.SYS_UMASK, unix.SYS_FCHDIR,
		unix.SYS_SETFSUID, unix.SYS_SETFSGID, unix.SYS_GETEUID, unix.SYS_GETUID, unix.SYS_GETEGID, unix.SYS_GETGID,
		unix.SYS_FGETXATTR, unix.SYS_FSETXATTR, unix.SYS_FLISTXATTR, unix.SYS_FREMOVEXATTR,
		unix.SYS_GETXATTRAT, unix.SYS_SETXATTRAT, unix.SYS_LISTXATTRAT, unix.SYS_REMOVEXATTRAT,
		unix.SYS_GETXATTR, unix.SYS_SETXATTR, unix.SYS_LISTXATTR, unix.SYS_REMOVEXATTR,
		// Capability read for the log line.
		unix.SYS_CAPGET,
		// The probe eventfd that identifies an eventfd the VMM sends
		// (vhostuser's checkEventfd), made at the first SET_VRING_KICK.
		unix.SYS_EVENTFD2,
	}, archSyscalls()...)
}
