package virtiofsd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// ReadyLine is what kata-virtiofsd prints on stderr once the vhost-user
// socket listens. runtime-rs (4.1.0, share_virtio_fs_standalone.rs,
// run_virtiofsd) reads the daemon's stderr line by line and starts the VM
// when a line contains "Waiting for vhost-user socket connection"; it waits
// for it without a timeout. The Rust and the C virtiofsd print that phrase at
// log level info on stderr, but not to syslog nor at a lower level, so
// kata-virtiofsd prints it itself, in every mode.
const ReadyLine = "Waiting for vhost-user socket connection..."

// AnnounceReady writes ReadyLine, naming the socket, as one line to w.
func AnnounceReady(w io.Writer, o *Options) error {
	where := o.socketName
	if where == "" {
		where = "fd " + strconv.Itoa(o.FD)
	}
	_, err := fmt.Fprintf(w, "kata-virtiofsd: %s (%s)\n", ReadyLine, where)
	return err
}

// maxSocketPath is the longest path a unix socket address holds
// (sizeof(sun_path) less the terminating NUL).
const maxSocketPath = 107

// Listen turns a --socket-path (or --socket) command line into one with an
// inherited listening socket: it creates the socket where the daemon would
// have (a relative path, as runtime-rs gives in rootless mode, is relative to
// the working directory, which runtime-rs sets to the socket's parent),
// gives it --socket-group's group, and rewrites o to --fd=N in place of the
// socket options, so that the upstream daemon, or kata-virtiofsd's own,
// serves that socket. Once Listen returns, a front-end's connection waits in
// the backlog: the socket is ready, whichever daemon accepts it.
//
// As the Rust and the C virtiofsd do, a socket left at the path by an earlier
// daemon is replaced; anything else there is an error. The descriptor
// belongs to o from then on, as an inherited --fd does (close-on-exec, which
// CheckListener clears before an exec); remove deletes the socket, for a
// daemon that exits or a start that fails after Listen. With --fd already
// given, or no socket at all, Listen does nothing and remove is a no-op; so
// with --print-capabilities, which serves nothing.
func Listen(o *Options) (remove func(), err error) {
	if o.FD >= 0 || o.SocketPath == "" || o.PrintCapabilities {
		return func() {}, nil
	}
	path := o.SocketPath
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("vhost-user socket path %s is %d bytes, more than a unix socket address holds (%d): "+
			"use a shorter --socket-path: %w", path, len(path), maxSocketPath, errdefs.ErrInvalidArgument)
	}
	gid := -1
	if o.SocketGroup != "" {
		if gid, err = lookupGroup(o.SocketGroup); err != nil {
			return nil, fmt.Errorf("--socket-group %s: %w: %w", o.SocketGroup, err, errdefs.ErrInvalidArgument)
		}
	}
	st, err := os.Lstat(path)
	switch {
	case err == nil && st.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("vhost-user socket path %s exists and is not a socket: remove it or use another --socket-path: %w",
			path, errdefs.ErrAlreadyExists)
	case err == nil:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale vhost-user socket: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("vhost-user socket path: %w", err)
	}
	// A raw descriptor, not a net.UnixListener's *os.File: no finalizer may
	// close it while the daemon that takes it over still needs it.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the vhost-user socket: %w", err)
	}
	remove = func() { _ = os.Remove(path) }
	fail := func(format string, err error) (func(), error) {
		unix.Close(fd)
		remove()
		return nil, fmt.Errorf(format, path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating the vhost-user socket %s: %w", path, err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listening on the vhost-user socket %s: %w", err)
	}
	if gid >= 0 {
		// As kata-virtiofsd's own daemon always did: the group may connect.
		if err := os.Chown(path, -1, gid); err != nil {
			return fail("--socket-group: %s: %w", err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			return fail("--socket-group: %s: %w", err)
		}
	}
	o.useFD(fd, path)
	return remove, nil
}

// listenBacklog is the backlog Rust's standard library gives a
// UnixListener, which the Rust virtiofsd uses.
const listenBacklog = 128

// useFD makes o serve the listening socket fd instead of creating one at
// path: the first socket option becomes --fd=N, the others go.
func (o *Options) useFD(fd int, path string) {
	arg := Arg{Name: "--fd", Value: strconv.Itoa(fd), Tokens: []string{"--fd=" + strconv.Itoa(fd)}}
	args := make([]Arg, 0, len(o.Args))
	for _, a := range o.Args {
		switch a.Name {
		case "--socket-path", "--socket":
			if arg.Name != "" {
				args = append(args, arg)
				arg.Name = ""
			}
			continue
		case "--socket-group":
			continue
		}
		args = append(args, a)
	}
	o.Args = args
	for _, k := range []string{"socket-path", "socket", "socket-group"} {
		delete(o.given, k)
	}
	o.given["fd"] = "--fd=" + strconv.Itoa(fd)
	o.FD, o.SocketPath, o.SocketGroup, o.socketName = fd, "", "", path
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}
