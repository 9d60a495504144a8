package virtiofsd

import "github.com/kata-submount-guard/kata-submount-guard/internal/syslog"

// devLog is the local syslog socket, where glibc's syslog(3) sends.
const devLog = "/dev/log"

// Host is what a translation needs to know about the machine the upstream
// daemon runs on. ProbeHost fills it just before the exec; tests give it.
type Host struct {
	// Syslog: a syslog daemon answers at devLog. Without one, QEMU's C
	// virtiofsd started with --syslog dies by SIGSYS at its first message
	// after it confined itself: glibc opens a new socket for every message
	// it could not send, and the daemon's seccomp filter forbids socket(2).
	Syslog bool
}

// ProbeHost looks at this machine as Host describes it. A /dev/log that is
// missing, is not a socket, or has no listener (a stale socket of a stopped
// syslog daemon) all mean no syslog: glibc fails the same way on each
// (syslog.Answers tries datagram first, as glibc does, then stream).
func ProbeHost() Host {
	return Host{Syslog: syslog.Answers(devLog)}
}
