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

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Daemon is who serves the share behind kata-virtiofsd.
type Daemon string

const (
	DaemonC    Daemon = "c"    // QEMU 7.2's C virtiofsd
	DaemonRust Daemon = "rust" // Rust virtiofsd 1.13.2
	// DaemonOurs: kata-virtiofsd serves the share itself (protection
	// recover, or no upstream configured).
	DaemonOurs Daemon = "ours"
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
	Extra      []string              // e.g. --xattr
	Protection protection.Protection // "": none given (the plan's or --guard-no-plan's)
	Upstream   string                // "": none given (the plan's, or kata-virtiofsd serves)
	StateDir   string                // "": kata-virtiofsd's default
}

// Args is the daemon's whole command line for the share at sharedDir.
func (s DaemonSpec) Args(sharedDir string) []string {
	return append(KataArgs(sharedDir), s.ExtraArgs()...)
}

// ExtraArgs is what the operator adds to virtio_fs_extra_args: Extra, then
// the --guard-* options.
func (s DaemonSpec) ExtraArgs() []string {
	args := append([]string{}, s.Extra...)
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
	cmd    *exec.Cmd
	done   chan error
	syslog *testutil.Syslog
	logf   *os.File
}

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
	return StartProcess(path, args, nil, []*os.File{lf}, nil, workDir, logPath)
}

// StartProcess runs path with args, env added to ours, files from fd 3 on
// and stdin (nil: /dev/null), as StartDaemon runs a daemon: in its own
// process group, its stdout, stderr and syslog lines in logPath. A launcher
// started this way (Kata's own launch code, test/katalaunch) passes all of it
// on to the daemon it starts.
//
// It runs under a /dev/log of its own (testutil.Syslog.Wrap): Kata always
// passes --syslog, and a host without a syslog daemon (CI containers) makes
// QEMU's C virtiofsd die by SIGSYS at its first message (glibc retries
// socket(2), which its seccomp filter forbids); on a host with one, the lines
// would go to the host's journal instead of logPath.
func StartProcess(path string, args, env []string, files []*os.File, stdin io.Reader, workDir, logPath string) (*DaemonProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	out := &lockedWriter{w: logf}
	sl, err := testutil.ListenSyslog(filepath.Join(workDir, "syslog.sock"), func(msg string) {
		fmt.Fprintf(out, "syslog: %s\n", msg)
	})
	if err != nil {
		logf.Close()
		return nil, err
	}
	d := &DaemonProc{done: make(chan error, 1), syslog: sl, logf: logf}
	cmd := exec.Command(path, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.ExtraFiles = files
	cmd.Stdin = stdin
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: the C daemon forks its sandbox child into it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = sl.Wrap(cmd)
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		d.closeLog()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	d.cmd = cmd
	go func() { d.done <- cmd.Wait() }()
	return d, nil
}

// closeLog stops the syslog listener, then closes the log it writes to.
func (d *DaemonProc) closeLog() {
	d.syslog.Close()
	d.logf.Close()
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
	defer d.closeLog()
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
