package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Daemon is an upstream virtio-fs daemon flavour.
type Daemon string

const (
	DaemonC    Daemon = "c"    // QEMU 7.2's C virtiofsd
	DaemonRust Daemon = "rust" // Rust virtiofsd 1.13.2
	// DaemonOurs: kata-virtiofsd serves the share itself (protection
	// recover); no upstream is involved.
	DaemonOurs Daemon = "ours"
)

// Protection is the value of kata-virtiofsd's --guard-protection.
type Protection string

const (
	ProtectNone        Protection = "none"
	ProtectNoSubmounts Protection = "no-submounts"
	ProtectRecover     Protection = "recover"
)

// kataArgs is the command line Kata ≥3.2 gives virtio_fs_daemon with the
// default virtio_fs_extra_args and virtio_fs_cache = "auto".
func kataArgs(sharedDir string) []string {
	return []string{
		"--syslog", "--cache=auto", "--shared-dir=" + sharedDir, "--fd=3",
		"--thread-pool-size=1", "--announce-submounts",
	}
}

// daemonCommand is how a cell starts its daemon: bin/kata-virtiofsd with
// Kata's argv, our --guard-* flags riding in virtio_fs_extra_args after
// Kata's own, as an operator would configure them.
func daemonCommand(kataVirtiofsd, upstream string, p Protection, sharedDir, stateDir string) (string, []string) {
	args := append(kataArgs(sharedDir), "--guard-protection="+string(p))
	if upstream != "" {
		args = append(args, "--guard-upstream="+upstream)
	}
	return kataVirtiofsd, append(args, "--guard-state-dir="+stateDir)
}

// daemonProc is a running daemon listening on the socket given as fd 3.
type daemonProc struct {
	cmd  *exec.Cmd
	done chan error
	sink *net.UnixConn
	sunk chan struct{}
}

// privateDevLog runs "$@" in its own mount namespace whose /dev mirrors the
// host's plus a /dev/log bound to $KSG_SYSLOG. Kata always passes --syslog;
// a host without a syslog socket (CI containers) makes QEMU's C virtiofsd
// die by SIGSYS at its first message: glibc retries socket(2), which its
// seccomp filter forbids. Real hosts have journald's /dev/log; this gives
// each cell its own, and the cell the daemons' syslog lines.
const privateDevLog = `set -e
host="$KSG_WORK/host-dev"
mkdir -p "$host"
mount --rbind /dev "$host"
mount -t tmpfs -o mode=0755 ksg-dev /dev
for e in "$host"/*; do
	n=${e##*/}
	if [ -L "$e" ]; then cp -P "$e" "/dev/$n"
	elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
	else : >"/dev/$n"; mount --bind "$e" "/dev/$n"
	fi
done
: >/dev/log
mount --bind "$KSG_SYSLOG" /dev/log
umount -l "$host"
exec "$@"`

// startDaemon creates the listening socket (as Kata does), starts the daemon
// with it as fd 3 and closes our copy. The daemon's stdout, stderr and syslog
// lines go to logPath.
func startDaemon(path string, args []string, workDir, socket, logPath string) (*daemonProc, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", socket, err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	syslogPath := filepath.Join(workDir, "syslog.sock")
	sink, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: syslogPath, Net: "unixgram"})
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("syslog sink: %w", err)
	}
	d := &daemonProc{done: make(chan error, 1), sink: sink, sunk: make(chan struct{})}
	var mu sync.Mutex
	out := &lockedWriter{mu: &mu, w: logf}
	go func() {
		defer close(d.sunk)
		defer logf.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := sink.Read(buf)
			if err != nil {
				return
			}
			fmt.Fprintf(out, "syslog: %s\n", strings.TrimRight(string(buf[:n]), "\n"))
		}
	}()

	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private",
		"sh", "-c", privateDevLog, "sh", path}, args...)...)
	cmd.Env = append(os.Environ(), "KSG_WORK="+workDir, "KSG_SYSLOG="+syslogPath)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: the C daemon forks its sandbox child into it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		sink.Close()
		<-d.sunk
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	d.cmd = cmd
	go func() { d.done <- cmd.Wait() }()
	return d, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// exited reports whether the daemon has ended, and how.
func (d *daemonProc) exited() (bool, error) {
	select {
	case err := <-d.done:
		d.done <- err
		return true, err
	default:
		return false, nil
	}
}

// stop ends the daemon's whole process group: SIGTERM, then SIGKILL; then
// its syslog sink.
func (d *daemonProc) stop() error {
	defer func() {
		d.sink.Close()
		<-d.sunk
	}()
	pgid := d.cmd.Process.Pid
	if ok, _ := d.exited(); ok {
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // a forked child may linger
		return nil
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			return errors.New("daemon did not die after SIGKILL")
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}
