package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Syslog is a syslog daemon a test owns: a unixgram socket, as journald's
// /dev/log, whose messages the test reads. Wrap runs a command with this
// socket as its /dev/log, so programs that log to the local syslog daemon
// (Kata's shim, virtiofsd --syslog) work on a host without one, and their
// lines reach the test instead of the host's journal on a host with one.
type Syslog struct {
	conn *net.UnixConn
	path string
	tee  func(msg string)
	done chan struct{}

	mu      sync.Mutex
	msgs    []string
	changed chan struct{} // closed and replaced on each message
}

// ListenSyslog listens at path (a unix socket path: at most 107 bytes) and
// collects each message, trimmed of its trailing newline; tee, if not nil,
// also gets each one as it arrives. Close stops it.
func ListenSyslog(path string, tee func(msg string)) (*Syslog, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("syslog listener: %w", err)
	}
	// As journald's: any user may log, also a daemon that dropped root.
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return nil, fmt.Errorf("syslog listener: %w", err)
	}
	s := &Syslog{conn: conn, path: path, tee: tee, done: make(chan struct{}), changed: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *Syslog) read() {
	defer close(s.done)
	buf := make([]byte, 256<<10)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		msg := strings.TrimRight(string(buf[:n]), "\n\x00")
		if s.tee != nil {
			s.tee(msg)
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, msg)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// Path is the listening socket.
func (s *Syslog) Path() string { return s.path }

// Messages returns the messages received so far, raw as the sender wrote
// them (e.g. "<14>Dec  3 08:30:00 kata[42]: ...").
func (s *Syslog) Messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// String is the messages received so far, one a line.
func (s *Syslog) String() string {
	return strings.Join(s.Messages(), "\n")
}

// WaitFor waits up to timeout for a message containing substr and returns
// the first one.
func (s *Syslog) WaitFor(substr string, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, m := range s.msgs {
			if strings.Contains(m, substr) {
				s.mu.Unlock()
				return m, nil
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-s.done:
			return "", fmt.Errorf("syslog listener closed before a message containing %q; got:\n%s", substr, s.String())
		case <-deadline.C:
			return "", fmt.Errorf("no syslog message containing %q within %s; got:\n%s", substr, timeout, s.String())
		}
	}
}

// Close stops listening and removes the socket; messages received stay.
func (s *Syslog) Close() error {
	err := s.conn.Close()
	<-s.done
	if rmErr := os.Remove(s.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && err == nil {
		err = rmErr
	}
	return err
}

// Wrap makes cmd, not yet started, run in a mount namespace of its own whose
// /dev mirrors the host's, except that /dev/log is s. The host's /dev/log,
// a socket, journald's symlink or none, is neither used nor changed.
// Everything cmd starts shares that namespace (a containerd under Wrap gives
// its shims, and they their daemons, this /dev/log).
//
// cmd keeps its process ID, argv[0], environment, directory, files and
// SysProcAttr (Setpgid, Pdeathsig): bash sets the namespace up, then execs
// cmd's program. Needs root (mount(2)) and bash; a directory host-dev
// beside s's socket is a mount point while the mirror is built. The
// mirror's device nodes are copies (same numbers and modes) taken at the
// start: nodes the host creates later do not appear; directories such as
// /dev/pts and /dev/shm are the host's own.
func (s *Syslog) Wrap(cmd *exec.Cmd) error {
	return wrapDev(cmd, filepath.Dir(s.path), devLogBind, s.path)
}

// PrivateSyslog is ListenSyslog and Wrap for a test: cmd, not yet started,
// gets a /dev/log of its own whose messages the returned Syslog collects.
// The listener is closed when t ends (after the cleanups registered later,
// such as one killing cmd). It needs root: without, the test is skipped
// (failed under CI).
func PrivateSyslog(t testing.TB, cmd *exec.Cmd) *Syslog {
	t.Helper()
	RequiresRoot(t)
	// Not t.TempDir: a long test name would not fit a socket path.
	dir, err := os.MkdirTemp("", "ksg-syslog-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := ListenSyslog(filepath.Join(dir, "log"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.Wrap(cmd))
	return s
}

// WrapNoSyslog makes cmd, not yet started, run as on a host without a
// syslog daemon: as Wrap does, but the private /dev has no /dev/log at all,
// whatever the host has there. dir holds a mount point while /dev is built.
func WrapNoSyslog(cmd *exec.Cmd, dir string) error {
	return wrapDev(cmd, dir, devLogNone, "")
}

// NoSyslog is WrapNoSyslog for a test. It needs root.
func NoSyslog(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	RequiresRoot(t)
	dir, err := os.MkdirTemp("", "ksg-nosyslog-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, WrapNoSyslog(cmd, dir))
}

// devLogMode is what wrapDev makes /dev/log in the private /dev.
type devLogMode string

const (
	devLogBind    devLogMode = "bind"    // the socket at path, bind-mounted
	devLogSymlink devLogMode = "symlink" // a symlink to path, as systemd makes it
	devLogNone    devLogMode = "none"    // nothing: a host without syslog
)

// privateDev builds the private /dev: $1 is the directory for the host's
// /dev while the mirror is built, $2 and $3 say what /dev/log becomes, the
// rest is argv[0], the program and its arguments. Directories (pts, shm)
// are bind-mounted; device nodes and symlinks are copied in one cp (a mount
// each took 1.4 s for this machine's 130 nodes); sockets are bind-mounted,
// a copy would be dead. The
// host's log entry is skipped whatever it is: opening it to make a mount
// point would open the host's socket (ENXIO) or journald's symlink target.
const privateDev = `set -e
shopt -s dotglob nullglob
host=$1 mode=$2 target=$3 argv0=$4
shift 4
mkdir -p "$host"
mount --rbind /dev "$host"
mount -t tmpfs -o mode=0755 ksg-dev /dev
copy=()
for e in "$host"/*; do
	n=${e##*/}
	if [ "$n" = log ]; then continue
	elif [ -L "$e" ]; then copy+=("$e")
	elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
	elif [ -S "$e" ]; then : >"/dev/$n"; mount --bind "$e" "/dev/$n"
	else copy+=("$e")
	fi
done
[ ${#copy[@]} -eq 0 ] || cp -a "${copy[@]}" /dev/
case $mode in
bind) : >/dev/log; mount --bind "$target" /dev/log ;;
symlink) ln -s "$target" /dev/log ;;
none) ;;
*) echo "privateDev: unknown mode $mode" >&2; exit 1 ;;
esac
umount -l "$host"
exec -a "$argv0" "$@"`

func wrapDev(cmd *exec.Cmd, dir string, mode devLogMode, target string) error {
	if cmd.Err != nil {
		return cmd.Err
	}
	if cmd.Process != nil {
		return errors.New("wrap: command already started")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return fmt.Errorf("wrap: a private /dev needs bash: %w", err)
	}
	argv0 := cmd.Path
	if len(cmd.Args) > 0 {
		argv0 = cmd.Args[0]
	}
	var rest []string
	if len(cmd.Args) > 1 {
		rest = cmd.Args[1:]
	}
	hostDev := filepath.Join(dir, "host-dev")
	cmd.Args = append([]string{"bash", "-c", privateDev, "ksg-private-dev", hostDev, string(mode), target, argv0, cmd.Path}, rest...)
	cmd.Path = bash
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Go also makes every mount private in the child, so nothing done there
	// propagates back to the host.
	cmd.SysProcAttr.Unshareflags |= syscall.CLONE_NEWNS
	return nil
}
