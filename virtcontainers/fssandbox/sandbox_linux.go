package fssandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
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

// keptCapabilities are the capabilities the confined server holds: file
// ownership and permission overrides, credential switching to act as the
// guest's caller, mknod, file capabilities. Unlike virtiofsd it drops
// CAP_DAC_READ_SEARCH: that one is only needed for open_by_handle_at (which
// the server never calls: file handles only identify submount roots, compared
// after name_to_handle_at) and linkat(AT_EMPTY_PATH) (LINK follows the
// /proc/self/fd magic link instead), and with it any bug that reaches
// open_by_handle_at opens host files outside the share ("Shocker").
func keptCapabilities() []int {
	return []int{
		unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER,
		unix.CAP_FSETID, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_MKNOD, unix.CAP_SETFCAP,
	}
}

// KeptMask is keptCapabilities as a bit mask (as in /proc/PID/status).
func KeptMask() uint64 {
	var m uint64
	for _, c := range keptCapabilities() {
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
// returns its exit error. When ctx ends the child gets SIGTERM. A child that
// a signal sent this way ends before it could handle it (during its setup)
// has stopped as asked: no error. The last signal is sent again every
// second until the child exits: a child in a new PID namespace is its
// init, and the kernel drops signals to an init that has no handler yet
// (the first moments after exec).
func (c *Child) Wait(ctx context.Context) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	defer signal.Stop(sigs)
	ctxDone := ctx.Done()
	sent := map[syscall.Signal]bool{}
	var last os.Signal
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	for {
		select {
		case <-resend.C:
			if last != nil {
				_ = c.cmd.Process.Signal(last)
			}
		case <-c.done:
			var ee *exec.ExitError
			if errors.As(c.err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && sent[ws.Signal()] {
					return nil
				}
			}
			return c.err
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok {
				sent[sig] = true
			}
			last = s
			_ = c.cmd.Process.Signal(s)
		case <-ctxDone:
			sent[unix.SIGTERM] = true
			last = unix.SIGTERM
			_ = c.cmd.Process.Signal(unix.SIGTERM)
			ctxDone = nil
		}
	}
}

// Setup confines the child Spawn started: it opens /proc/self/fd on a
// read-only procfs that shows only processes (see openProc), makes the
// directory Spawn named its root (pivot_root in the new mount namespace,
// where the share is remounted nosuid and nodev, or chroot), reduces the
// capabilities of every thread to keptCapabilities and sets no_new_privs on
// every thread. The process then serves from the returned Confined; a
// seccomp filter (RestrictSyscalls) comes last, once the serving setup is
// done.
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
	c := &Confined{Mode: mode, Root: "/"}
	var procFD int
	switch mode {
	case ModeNamespace:
		procFD, err = pivotInto(c, dir)
	case ModeChroot:
		procFD, err = chrootInto(c, dir)
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
	if err := setNoNewPrivs(); err != nil {
		unix.Close(procFD)
		return nil, err
	}
	for _, k := range []string{envStage, envMode, envDir} {
		_ = os.Unsetenv(k)
	}
	c.ProcSelfFD = os.NewFile(uintptr(procFD), "/proc/self/fd")
	return c, nil
}

// openProc returns an O_PATH descriptor of /proc/self/fd on a procfs of the
// caller's PID namespace that is read-only, nosuid, nodev, noexec and shows
// only processes (subset=pid: no /proc/sys, no /proc/sysrq-trigger), so that
// "../../sys/kernel/core_pattern" from the descriptor leads nowhere. It is a
// detached mount (fsopen, fsmount: Linux 5.2, subset 5.8), attached to no
// directory, so the chroot sandbox gets it too without touching the host's
// mounts. Where the kernel lacks these, the namespace sandbox mounts a
// read-only /proc of its own (mounts are private to it by then) and the
// chroot sandbox falls back to the host's /proc; c.Weaker says so.
func openProc(c *Confined) (int, error) {
	fd, err := detachedProc()
	if err == nil {
		return fd, nil
	}
	if c.Mode == ModeNamespace {
		c.Weaker = append(c.Weaker, fmt.Sprintf("no detached procfs with subset=pid (%v): /proc is mounted read-only but complete", err))
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RELATIME, ""); err != nil {
			return -1, fmt.Errorf("sandbox: mount /proc of the new PID namespace: %w", err)
		}
	} else {
		c.Weaker = append(c.Weaker, fmt.Sprintf("no detached procfs with subset=pid (%v): the host's /proc is used", err))
	}
	fd, err = unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("sandbox: open /proc/self/fd: %w", err)
	}
	return fd, nil
}

func detachedProc() (int, error) {
	fsfd, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen proc: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "subset", "pid"); err != nil {
		return -1, fmt.Errorf("procfs subset=pid: %w", err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create procfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC,
		unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsmount procfs: %w", err)
	}
	defer unix.Close(mfd)
	fd, err := unix.Openat(mfd, "self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open self/fd on the detached procfs: %w", err)
	}
	return fd, nil
}

// pivotInto makes dir the root of this mount namespace (new since Spawn),
// nosuid and nodev there, and returns an fd of a /proc/self/fd of the new
// PID namespace.
func pivotInto(c *Confined, dir string) (int, error) {
	// Our mounts must not leak to the host; host mounts made later under
	// the shared directory (volumes) must still reach us.
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return -1, fmt.Errorf("sandbox: make mounts slave: %w", err)
	}
	procFD, err := openProc(c)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) { unix.Close(procFD); return -1, err }
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fail(fmt.Errorf("sandbox: bind %s onto itself: %w", dir, err))
	}
	// A device node the guest makes (CAP_MKNOD is kept for MKNOD) must not
	// open the host's device here, nor a set-user-ID file gain anything.
	// Mounts that reach the share later from the host keep their own
	// flags: the host must mount volumes nosuid,nodev itself.
	if err := restrictMounts(dir); err != nil {
		return fail(err)
	}
	if err := unix.Chdir(dir); err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching it leaves only the shared directory.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail(fmt.Errorf("sandbox: pivot_root into %s: %w", dir, err))
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail(fmt.Errorf("sandbox: detach old root: %w", err))
	}
	if err := unix.Chdir("/"); err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}
	return procFD, nil
}

// restrictMounts makes dir's mount and every mount below it nosuid and nodev
// (mount_setattr, Linux 5.12); older kernels get the top mount remounted.
func restrictMounts(dir string) error {
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	err := unix.MountSetattr(unix.AT_FDCWD, dir, unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW, &attr)
	if err == nil {
		return nil
	}
	if err != unix.ENOSYS {
		return fmt.Errorf("sandbox: make %s nosuid,nodev: %w", dir, err)
	}
	// MS_REMOUNT|MS_BIND keeps the other per-mount flags only if given.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	flags := uintptr(unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV) | uintptr(st.Flags)&(unix.MS_RDONLY|unix.MS_NOEXEC|unix.MS_NOATIME|unix.MS_NODIRATIME|unix.MS_RELATIME)
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		return fmt.Errorf("sandbox: remount %s nosuid,nodev: %w", dir, err)
	}
	return nil
}

func chrootInto(c *Confined, dir string) (int, error) {
	procFD, err := openProc(c)
	if err != nil {
		return -1, err
	}
	// No mount namespace of its own: the share keeps the host's mount
	// flags (the host must mount it nosuid,nodev).
	c.Weaker = append(c.Weaker, "chroot sandbox: the share keeps the host's mount flags (no nosuid,nodev of its own)")
	if err := unix.Chroot(dir); err != nil {
		unix.Close(procFD)
		return -1, fmt.Errorf("sandbox: chroot %s: %w", dir, err)
	}
	if err := unix.Chdir("/"); err != nil {
		unix.Close(procFD)
		return -1, fmt.Errorf("sandbox: %w", err)
	}
	return procFD, nil
}

// setNoNewPrivs sets no_new_privs on every thread (it is per thread, and
// inherited by threads started later): no execve can gain privileges, and a
// seccomp filter may be installed without CAP_SYS_ADMIN.
func setNoNewPrivs() error {
	if _, _, errno := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); errno != 0 {
		return fmt.Errorf("sandbox: set no_new_privs: %w", errno)
	}
	return nil
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

// shrinkCapabilities reduces the bounding, permitted, effective and
// inheritable sets of every thread to the kept capabilities and clears the
// ambient set.
func shrinkCapabilities() error {
	keep := KeptMask()
	// Every capability number a mask can hold: the kernel answers EINVAL
	// for those it does not have. (Reading /proc/sys/kernel/cap_last_cap
	// here would read a file in the guest's share: the root has changed.)
	for c := 0; c < 64; c++ {
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
	// Weaker lists the hardening steps this kernel or mode could not take,
	// for the log.
	Weaker []string
	// Root is the shared directory as the confined process sees it: "/".
	Root string
	// ProcSelfFD is /proc/self/fd of the process's PID namespace.
	ProcSelfFD *os.File
}
