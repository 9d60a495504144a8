package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Daemon is who serves the share behind bin/kata-virtiofsd.
type Daemon string

const (
	DaemonC    Daemon = "c"    // QEMU 7.2's C virtiofsd
	DaemonRust Daemon = "rust" // Rust virtiofsd 1.13.2
	// DaemonOurs: kata-virtiofsd serves the share itself (protection
	// recover, or no upstream configured).
	DaemonOurs Daemon = "ours"
)

// Protection is the value of kata-virtiofsd's --guard-protection.
type Protection string

const (
	ProtectNone        Protection = "none"
	ProtectNoSubmounts Protection = "no-submounts"
	ProtectRecover     Protection = "recover"
)

// CDaemonPath is where qemu-system-common installs the C virtiofsd.
const CDaemonPath = "/usr/lib/qemu/virtiofsd"

// KataArgs is the command line Kata ≥3.2 gives virtio_fs_daemon with the
// default virtio_fs_extra_args and virtio_fs_cache = "auto".
func KataArgs(sharedDir string) []string {
	return []string{
		"--syslog", "--cache=auto", "--shared-dir=" + sharedDir, "--fd=3",
		"--thread-pool-size=1", "--announce-submounts",
	}
}

// DaemonSpec is what an operator adds to virtio_fs_extra_args after Kata's
// defaults: other virtiofsd options, then our --guard-* options.
type DaemonSpec struct {
	Extra      []string   // e.g. --xattr
	Protection Protection // "": none given (the plan's or --guard-no-plan's)
	Upstream   string     // "": none given (the plan's, or kata-virtiofsd serves)
	StateDir   string     // "": kata-virtiofsd's default
}

// Args is the daemon's whole command line for the share at sharedDir.
func (s DaemonSpec) Args(sharedDir string) []string {
	args := append(KataArgs(sharedDir), s.Extra...)
	if s.Protection != "" {
		args = append(args, "--guard-protection="+string(s.Protection))
	}
	if s.Upstream != "" {
		args = append(args, "--guard-upstream="+s.Upstream)
	}
	if s.StateDir != "" {
		args = append(args, "--guard-state-dir="+s.StateDir)
	}
	return args
}

// DaemonProc is a running daemon listening on the socket given as fd 3.
type DaemonProc struct {
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
// each daemon its own, and the test the daemons' syslog lines. unshare and
// sh exec, so the daemon keeps the process ID the test started.
const privateDevLog = `set -e
host="$KSG_WORK/host-dev"
mkdir -p "$host"
mount --rbind /dev "$host"
mount -t tmpfs -o mode=0755 ksg-dev /dev
for e in "$host"/*; do
	n=${e##*/}
	if [ "$n" = log ]; then continue # the host's own syslog socket: replaced below
	elif [ -L "$e" ]; then cp -P "$e" "/dev/$n"
	elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
	else : >"/dev/$n"; mount --bind "$e" "/dev/$n"
	fi
done
: >/dev/log
mount --bind "$KSG_SYSLOG" /dev/log
umount -l "$host"
exec "$@"`

// StartDaemon creates the listening socket (as Kata does), starts path with
// args and the socket as fd 3, and closes our copy. The daemon's stdout,
// stderr and syslog lines go to logPath; workDir holds its syslog socket.
func StartDaemon(path string, args []string, workDir, socket, logPath string) (*DaemonProc, error) {
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
	d := &DaemonProc{done: make(chan error, 1), sink: sink, sunk: make(chan struct{})}
	out := &lockedWriter{w: logf}
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
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Pid is the daemon's process ID (kata-virtiofsd, or the upstream
// virtiofsd it became: both exec).
func (d *DaemonProc) Pid() int { return d.cmd.Process.Pid }

// Exited reports whether the daemon has ended, and how.
func (d *DaemonProc) Exited() (bool, error) {
	return d.Wait(0)
}

// Wait waits up to timeout for the daemon to end by itself and reports
// whether it did, and how.
func (d *DaemonProc) Wait(timeout time.Duration) (bool, error) {
	var after <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		after = tm.C
	}
	select {
	case err := <-d.done:
		d.done <- err
		return true, err
	default:
	}
	if after == nil {
		return false, nil
	}
	select {
	case err := <-d.done:
		d.done <- err
		return true, err
	case <-after:
		return false, nil
	}
}

// Stop ends the daemon's whole process group: SIGTERM, then SIGKILL; then
// its syslog sink.
func (d *DaemonProc) Stop() error {
	defer func() {
		d.sink.Close()
		<-d.sunk
	}()
	pgid := d.cmd.Process.Pid
	if ok, _ := d.Exited(); ok {
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

// Memory sums, over the daemon and its descendants (the C daemon serves
// from a sandboxed child), VmHWM (peak resident, including the guest memory
// pages the daemon touched) and RssAnon (its private memory now), in kB.
func (d *DaemonProc) Memory() (peakKB, anonKB int) {
	pid := d.cmd.Process.Pid
	for _, p := range append([]int{pid}, descendants(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			switch k {
			case "VmHWM":
				peakKB += kb
			case "RssAnon":
				anonKB += kb
			}
		}
	}
	return peakKB, anonKB
}

func descendants(pid int) []int {
	var out []int
	for _, p := range testutil.Children(pid) {
		out = append(out, p)
		out = append(out, descendants(p)...)
	}
	return out
}
