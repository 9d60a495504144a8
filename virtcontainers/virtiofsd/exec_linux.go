package virtiofsd

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// CheckListener verifies that fd is an open, listening socket, as Kata's
// --fd=3 must be, and clears its close-on-exec flag so that it stays fd at
// the same number across exec.
func CheckListener(fd int) error {
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	switch {
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("--fd=%d: no such open file descriptor (Kata passes its listening vhost-user socket as fd 3): %w", fd, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.ENOTSOCK):
		return fmt.Errorf("--fd=%d: not a socket (Kata passes its listening vhost-user socket as fd 3): %w", fd, errdefs.ErrInvalidArgument)
	case err != nil:
		return fmt.Errorf("--fd=%d: %w", fd, err)
	case listening != 1:
		return fmt.Errorf("--fd=%d: the socket is not listening (virtiofsd needs a listening, not yet connected, socket): %w", fd, errdefs.ErrInvalidArgument)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return fmt.Errorf("--fd=%d: F_GETFD: %w", fd, err)
	}
	if flags&unix.FD_CLOEXEC != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags&^unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("--fd=%d: clearing close-on-exec: %w", fd, err)
		}
	}
	return nil
}

// Exec replaces the current process with the upstream daemon d, so that
// Kata's pid, stdio and the listening socket (o.FD, kept at its number)
// carry over. It returns only on failure.
func Exec(o *Options, d Daemon, args []string) error {
	if o.FD >= 0 {
		if err := CheckListener(o.FD); err != nil {
			return err
		}
	}
	argv := append([]string{d.Path}, args...)
	err := unix.Exec(d.Path, argv, os.Environ())
	return fmt.Errorf("exec %s: %w", d.Path, err)
}
