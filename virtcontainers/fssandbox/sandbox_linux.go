package fssandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Mode is how the server is confined (virtiofsd's --sandbox).
type Mode string

const (
	// ModeNamespace: new mount, PID and network namespaces, pivot_root into
	// the shared directory. virtiofsd's default.
	ModeNamespace Mode = "namespace"
	// ModeChroot: chroot into the shared directory, no new namespaces.
	ModeChroot Mode = "chroot"
	// ModeNone: no confinement (the server runs in the calling process).
	ModeNone Mode = "none"
)

// ParseMode accepts virtiofsd's --sandbox values; empty is ModeNamespace.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeNamespace, nil
	case ModeNamespace, ModeChroot, ModeNone:
		return m, nil
	}
	return "", fmt.Errorf("sandbox mode %q: want namespace, chroot or none: %w", s, errdefs.ErrInvalidArgument)
}

// Environment of the confinement steps.
const (
	envStage = "KSG_FSSANDBOX_STAGE"
	envMode  = "KSG_FSSANDBOX_MODE"
	envDir   = "KSG_FSSANDBOX_DIR"

	stageSetup = "setup"
)

// FirstFD is where the files given to Spawn start in the child, in order.
const FirstFD = 3

// KeptCapabilities are the capabilities the confined server holds, as
// virtiofsd keeps them: file ownership and permission overrides, credential
// switching to act as the guest's caller, mknod, file capabilities, and
// open_by_handle_at (CAP_DAC_READ_SEARCH) for file handles.
func KeptCapabilities() []int {
	return []int{
		unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER,
		unix.CAP_FSETID, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_MKNOD, unix.CAP_SETFCAP,
	}
}

// KeptMask is KeptCapabilities as a bit mask (as in /proc/PID/status).
func KeptMask() uint64 {
	var m uint64
	for _, c := range KeptCapabilities() {
		m |= 1 << uint(c)
	}
	return m
}

// Stage reports whether the current process is a sandbox child started by
// Spawn ("setup") or not ("").
func Stage() string { return os.Getenv(envStage) }

// Supported reports whether this binary can confine itself in mode: the
// sandboxes drop capabilities in all threads, which Go does only in binaries
// built without cgo.
func Supported(mode Mode) error {
	if mode == ModeNone {
		return nil
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, 0, 0); errno == syscall.ENOTSUP {
		return fmt.Errorf("sandbox %s: this binary is built with cgo and cannot drop capabilities in all its threads; build it with CGO_ENABLED=0 (make build does) or run with --sandbox=none: %w", mode, errdefs.ErrNotImplemented)
	}
	return nil
}

// Spawn starts the current executable (with the same arguments) as the
// sandboxed child for mode, confined to dir. files become fds FirstFD... in
// the child; env is added to the child's environment. The caller waits with
// Wait.
func Spawn(mode Mode, dir string, files []*os.File, env []string, stdout, stderr *os.File) (*Child, error) {
	if mode == ModeNone {
		return nil, fmt.Errorf("sandbox mode none runs no child: %w", errdefs.ErrInvalidArgument)
	}
	if Stage() != "" {
		// A sandbox child that reaches Spawn again would fork for ever.
		return nil, fmt.Errorf("sandbox: a sandbox child must call Setup, not Spawn (main lacks its sandbox hook): %w", errdefs.ErrFailedPrecondition)
	}
	if err := Supported(mode); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sandbox: find own executable: %w", err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(append(withoutSandboxEnv(os.Environ()), env...),
		envStage+"="+stageSetup, envMode+"="+string(mode), envDir+"="+dir)
	cmd.ExtraFiles = files
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if mode == ModeNamespace {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET
	}
	// Pdeathsig fires when the thread that forked exits: fork from a thread
	// that lives until Wait returns.
	started := make(chan error, 1)
	ch := &Child{done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Not unlocked: this thread may only exit with the child.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		ch.cmd = cmd
		started <- nil
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("sandbox: start %s child: %w", mode, err)
	}
	return ch, nil
}

func withoutSandboxEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "KSG_FSSANDBOX_") })
}

// Child is a sandboxed server process started by Spawn.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Pid is the child's process ID in the caller's PID namespace.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Wait forwards SIGTERM, SIGINT and SIGHUP to the child until it exits, and
// returns its exit error. When ctx ends the child gets SIGTERM.
func (c *Child) Wait(ctx context.Context) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	defer signal.Stop(sigs)
	ctxDone := ctx.Done()
	for {
		select {
		case <-c.done:
			return c.err
		case s := <-sigs:
			_ = c.cmd.Process.Signal(s)
		case <-ctxDone:
			_ = c.cmd.Process.Signal(unix.SIGTERM)
			ctxDone = nil
		}
	}
}

// Setup confines the child Spawn started: it makes the directory Spawn
// named its root (pivot_root in the new mount namespace, or chroot), opens
// /proc/self/fd for the file system, and reduces the capabilities of every
// thread to KeptCapabilities. The process then serves from the returned
// Confined.
//
// Capabilities are per thread; changing them for all threads needs
// syscall.AllThreadsSyscall, which Go provides only without cgo: the binary
// must be built with CGO_ENABLED=0 (make build does for kata-virtiofsd).
func Setup() (*Confined, error) {
	if Stage() != stageSetup {
		return nil, fmt.Errorf("sandbox setup outside a sandbox child: %w", errdefs.ErrFailedPrecondition)
	}
	mode, err := ParseMode(os.Getenv(envMode))
	if err != nil {
		return nil, err
	}
	dir := os.Getenv(envDir)
	if dir == "" || !strings.HasPrefix(dir, "/") {
		return nil, fmt.Errorf("sandbox: shared directory %q must be absolute: %w", dir, errdefs.ErrInvalidArgument)
	}
	// Check first that capabilities can be dropped at all, before
	// changing anything.
	if err := Supported(mode); err != nil {
		return nil, err
	}
	var procFD int
	switch mode {
	case ModeNamespace:
		procFD, err = pivotInto(dir)
	case ModeChroot:
		procFD, err = chrootInto(dir)
	default:
		err = fmt.Errorf("sandbox mode %s needs no setup: %w", mode, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	if err := shrinkCapabilities(); err != nil {
		unix.Close(procFD)
		return nil, err
	}
	for _, k := range []string{envStage, envMode, envDir} {
		_ = os.Unsetenv(k)
	}
	return &Confined{Mode: mode, Root: "/", ProcSelfFD: os.NewFile(uintptr(procFD), "/proc/self/fd")}, nil
}

// pivotInto makes dir the root of this mount namespace (new since Spawn) and
// returns an fd of a /proc/self/fd of the new PID namespace.
func pivotInto(dir string) (int, error) {
	// Our mounts must not leak to the host; host mounts made later under
	// the shared directory (volumes) must still reach us.
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return -1, fmt.Errorf("sandbox: make mounts slave: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RELATIME, ""); err != nil {
		return -1, fmt.Errorf("sandbox: mount /proc of the new PID namespace: %w", err)
	}
	procFD, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("sandbox: open /proc/self/fd: %w", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return -1, fmt.Errorf("sandbox: bind %s onto itself: %w", dir, err)
	}
	if err := unix.Chdir(dir); err != nil {
		return -1, fmt.Errorf("sandbox: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching it leaves only the shared directory.
	if err := unix.PivotRoot(".", "."); err != nil {
		return -1, fmt.Errorf("sandbox: pivot_root into %s: %w", dir, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return -1, fmt.Errorf("sandbox: detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return -1, fmt.Errorf("sandbox: %w", err)
	}
	return procFD, nil
}

func chrootInto(dir string) (int, error) {
	procFD, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("sandbox: open /proc/self/fd: %w", err)
	}
	if err := unix.Chroot(dir); err != nil {
		return -1, fmt.Errorf("sandbox: chroot %s: %w", dir, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return -1, fmt.Errorf("sandbox: %w", err)
	}
	return procFD, nil
}

// EffectiveCapabilities is the calling thread's effective capability set
// (as CapEff in /proc/PID/status), from capget(2): a confined process must
// not read /proc/self/status by path, which resolves in the guest's share.
func EffectiveCapabilities() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return unix.CAP_LAST_CAP
}

// shrinkCapabilities reduces the bounding, permitted, effective and
// inheritable sets of every thread to the kept capabilities and clears the
// ambient set.
func shrinkCapabilities() error {
	keep := KeptMask()
	for c := 0; c <= lastCap(); c++ {
		if keep&(1<<uint(c)) != 0 {
			continue
		}
		if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); errno != 0 && errno != unix.EINVAL {
			return fmt.Errorf("sandbox: drop capability %d from the bounding set: %w", c, errno)
		}
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); errno != 0 && errno != unix.EINVAL {
		return fmt.Errorf("sandbox: clear ambient capabilities: %w", errno)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("sandbox: capget: %w", err)
	}
	for i := range data {
		k := uint32(keep >> (32 * i))
		data[i].Effective &= k
		data[i].Permitted &= k
		data[i].Inheritable = 0
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("sandbox: capset: %w", errno)
	}
	return nil
}

// Confined describes the process in the "confined" step.
type Confined struct {
	Mode Mode
	// Root is the shared directory as the confined process sees it: "/".
	Root string
	// ProcSelfFD is /proc/self/fd of the process's PID namespace.
	ProcSelfFD *os.File
}
