package fsdaemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// requestQueues is how many request queues the device accepts; QEMU's
// vhost-user-fs num-request-queues (Kata: 1) must not exceed it.
const requestQueues = 16

// envOptions carries the parsed options to the sandboxed child, which
// re-executes the same binary.
const envOptions = "KSG_FSSERVER_OPTIONS"

// Serve serves o.SharedDir over the vhost-user socket o.FD (an inherited
// listening socket) or o.SocketPath until the frontend disconnects. With
// sandbox namespace or chroot the daemon runs in a confined child of this
// process (see package fssandbox), whose log is relayed to ctx's logger; the
// binary's main must hand such a child to RunSandboxChild.
//
// Options the daemon cannot honour (virtiofsd.CheckServe) are refused before
// anything is created; so is a --rlimit-nofile that cannot be set.
func Serve(ctx context.Context, o *virtiofsd.Options) error {
	harmless, err := virtiofsd.CheckServe(o)
	if err != nil {
		return err
	}
	if len(harmless) > 0 {
		log.G(ctx).WithField("options", strings.Join(harmless, " ")).
			Info("options without effect on kata-virtiofsd's own daemon, which holds O_PATH descriptors and does not migrate")
	}
	if err := vhostuser.CheckHost(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if o.ThreadPoolSize > vhostuser.MaxWorkers {
		return fmt.Errorf("serve: --thread-pool-size=%d is above %d: each busy worker holds an OS thread; give at most %d (Kata's default is 1): %w",
			o.ThreadPoolSize, vhostuser.MaxWorkers, vhostuser.MaxWorkers, errdefs.ErrInvalidArgument)
	}
	if o.SharedDir == "" {
		return fmt.Errorf("serve: no shared directory (--shared-dir): %w", errdefs.ErrInvalidArgument)
	}
	dir, err := filepath.Abs(o.SharedDir)
	if err != nil {
		return fmt.Errorf("serve: shared directory %q: %w", o.SharedDir, err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("serve: shared directory %q is not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	mode, err := fssandbox.ParseMode(string(o.Sandbox))
	if err != nil {
		return fmt.Errorf("serve: --sandbox: %w", err)
	}
	if err := fssandbox.Supported(mode); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// The filter goes into the sandboxed child; without one the daemon
	// shares its process with the launcher (status file, syslog), which
	// the allow-list does not cover.
	if given, ok := o.Given("seccomp"); ok && mode == fssandbox.ModeNone && o.Seccomp != string(fssandbox.SeccompNone) {
		return fmt.Errorf("serve: %s needs a sandbox: the seccomp filter is installed in the sandboxed daemon; "+
			"use --sandbox=namespace or chroot, or leave the option out: %w", given, errdefs.ErrInvalidArgument)
	}
	// SIGTERM, SIGINT and SIGHUP end the daemon cleanly from here on, also
	// before a front-end connects and in every sandbox mode: the status
	// file then says it stopped. (Without this, --sandbox=none died of the
	// signal's default action and left running: true behind.)
	parent := ctx
	ctx, stopNotify := signal.NotifyContext(ctx, stopSignals...)
	defer stopNotify()
	bySignal := func(err error) bool {
		return parent.Err() == nil && ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled))
	}
	// Before the sandbox starts, which inherits the limit.
	if err := setRlimitNofile(ctx, o.RlimitNofile); err != nil {
		return err
	}
	l, cleanup, err := listen(o)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("shared_dir", dir))
	// Protection recover: <state_dir>/status/<sandbox-id>.json.
	status := newStatusFile(ctx, o)
	defer status.finish(ctx)

	if mode == fssandbox.ModeNone {
		var report func(passthroughfs.RecoveryStats)
		if status != nil {
			report = func(st passthroughfs.RecoveryStats) { status.update(ctx, st) }
		}
		err := serveOn(ctx, l, dir, nil, o, report, fssandbox.SeccompNone)
		if bySignal(err) {
			log.G(ctx).Info("virtio-fs daemon stopped by a signal")
			return nil
		}
		return err
	}

	lf, err := l.File()
	_ = l.Close()
	if err != nil {
		return fmt.Errorf("serve: listening socket: %w", err)
	}
	child := *o
	child.SharedDir = dir
	child.FD = fssandbox.FirstFD
	child.SocketPath = ""
	optsJSON, err := json.Marshal(&child)
	if err != nil {
		lf.Close()
		return fmt.Errorf("serve: encode options for the sandbox: %w", err)
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		lf.Close()
		return fmt.Errorf("serve: log pipe: %w", err)
	}
	files, env := []*os.File{lf}, []string{envOptions + "=" + string(optsJSON)}
	var statusR, statusW *os.File
	if status != nil {
		if statusR, statusW, err = os.Pipe(); err != nil {
			lf.Close()
			logR.Close()
			logW.Close()
			return fmt.Errorf("serve: status pipe: %w", err)
		}
		env = append(env, envStatusFD+"="+strconv.Itoa(fssandbox.FirstFD+len(files)))
		files = append(files, statusW)
	}
	c, err := fssandbox.Spawn(mode, dir, files, env, nil, logW)
	lf.Close()
	logW.Close()
	if statusW != nil {
		statusW.Close()
	}
	if err != nil {
		logR.Close()
		if statusR != nil {
			statusR.Close()
		}
		return fmt.Errorf("serve: %w", err)
	}
	// What starting took (options, plan, JSON) is garbage now: give it
	// back, this process only waits from here on.
	debug.FreeOSMemory()
	relayedStatus := make(chan struct{})
	if statusR != nil {
		go func() { status.relay(ctx, statusR); statusR.Close(); close(relayedStatus) }()
	} else {
		close(relayedStatus)
	}
	relayed := make(chan struct{})
	go func() { relayLog(ctx, logR); logR.Close(); close(relayed) }()
	log.G(ctx).WithField("sandbox_mode", mode).WithField("pid", c.Pid()).Info("virtio-fs daemon started in its sandbox")
	err = c.Wait(ctx)
	<-relayed
	<-relayedStatus
	if err != nil && !bySignal(nil) {
		return fmt.Errorf("serve: sandboxed daemon: %w", err)
	}
	return nil
}

// listen returns the vhost-user listening socket: the inherited fd, or a new
// socket at o.SocketPath (removed again by cleanup).
func listen(o *virtiofsd.Options) (*net.UnixListener, func(), error) {
	if o.FD >= 0 {
		f := os.NewFile(uintptr(o.FD), "vhost-user socket")
		fl, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("serve: --fd=%d is not a listening socket: %w", o.FD, err)
		}
		ul, ok := fl.(*net.UnixListener)
		if !ok {
			fl.Close()
			return nil, nil, fmt.Errorf("serve: --fd=%d is not a unix socket: %w", o.FD, errdefs.ErrInvalidArgument)
		}
		return ul, func() {}, nil
	}
	if o.SocketPath == "" {
		return nil, nil, fmt.Errorf("serve: neither --fd nor --socket-path given: %w", errdefs.ErrInvalidArgument)
	}
	path := o.SocketPath
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("serve: --socket-path %s exists and is not a socket: %w", path, errdefs.ErrAlreadyExists)
		}
		_ = os.Remove(path)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("serve: --socket-path: %w", err)
	}
	ul.SetUnlinkOnClose(false)
	cleanup := func() { _ = os.Remove(path) }
	mode := os.FileMode(0o600)
	if o.SocketGroup != "" {
		gid, err := lookupGroup(o.SocketGroup)
		if err == nil {
			err = os.Chown(path, -1, gid)
		}
		if err != nil {
			ul.Close()
			cleanup()
			return nil, nil, fmt.Errorf("serve: --socket-group %s: %w", o.SocketGroup, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		ul.Close()
		cleanup()
		return nil, nil, fmt.Errorf("serve: %w", err)
	}
	return ul, cleanup, nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

// fsOptions are the file system's options for o, in a process running with
// procs Ps (GOMAXPROCS).
func fsOptions(o *virtiofsd.Options, procSelf *os.File, rec *passthroughfs.RecoverOptions, procs int) passthroughfs.Options {
	return passthroughfs.Options{
		Cache:             passthroughfs.CachePolicy(o.Cache),
		AnnounceSubmounts: o.AnnounceSubmounts,
		Xattr:             o.XattrEnabled(),
		AllowDirectIO:     o.AllowDirectIO,
		ReadOnly:          o.ReadOnly,
		PreserveNoatime:   o.PreserveNoatime,
		AllowMmap:         o.AllowMmap,
		ProcSelfFD:        procSelf,
		Recover:           rec,
		MaxIOPerCall:      maxIOPerCall(procs),
	}
}

// serveOn accepts one frontend on l and serves root to it. With protection
// recover the file system recovers forgotten submount roots and passes its
// counters to report (may be nil).
// seccomp is the filter in force, for the log.
func serveOn(ctx context.Context, l *net.UnixListener, root string, procSelf *os.File, o *virtiofsd.Options,
	report func(passthroughfs.RecoveryStats), seccomp fssandbox.SeccompAction) error {
	var rec *passthroughfs.RecoverOptions
	if o.Protection == protection.Recover {
		rec = &passthroughfs.RecoverOptions{Report: report}
	}
	// The guest kernel has applied the caller's umask to every mode it
	// sends (virtiofsd sets 0 too).
	syscall.Umask(0)
	fo := fsOptions(o, procSelf, rec, runtime.GOMAXPROCS(0))
	fs, err := passthroughfs.New(ctx, root, fo)
	if err != nil {
		l.Close()
		return fmt.Errorf("serve: %w", err)
	}
	defer fs.Close()

	stop := context.AfterFunc(ctx, func() { l.Close() })
	conn, err := l.AcceptUnix()
	stop()
	l.Close()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("serve: accept vhost-user frontend: %w", err)
	}
	defer conn.Close()

	mo := fs.MountOptions()
	if !o.Readdirplus() {
		mo.DisableReadDirPlus = true
	}
	dev := fsserver.NewDevice(ctx, fs, mo, fsserver.DeviceConfig{RequestQueues: requestQueues})
	// go-fuse reports some malformed requests (a short READ) with the
	// standard logger, straight to stderr: rate-limit those too. This
	// process serves one device, so taking the global logger is ours to do.
	defer stdlog.SetOutput(stdlog.Writer())
	defer stdlog.SetFlags(stdlog.Flags())
	stdlog.SetFlags(0)
	stdlog.SetOutput(dev.GuestLog(ctx))
	b := vhostuser.NewBackend(dev, vhostuser.Config{Workers: o.ThreadPoolSize, InlineQueues: []int{fsserver.HiprioQueue}})
	defer startIdleRelease(ctx, fs.Compact)()
	log.G(ctx).WithFields(log.Fields{
		"cache":              o.Cache,
		"announce_submounts": o.AnnounceSubmounts,
		"thread_pool_size":   o.ThreadPoolSize,
		"xattr":              o.XattrEnabled(),
		"readonly":           o.ReadOnly,
		"recover":            rec != nil,
		"seccomp":            seccomp,
		"max_io_per_call":    fo.MaxIOPerCall,
	}).Info("vhost-user frontend connected; serving")
	if err := b.Serve(ctx, conn); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.G(ctx).Info("vhost-user frontend disconnected; daemon exits")
	return nil
}

// IsSandboxChild reports whether this process is a sandbox step started by
// Serve; main must then call RunSandboxChild instead of anything else.
func IsSandboxChild() bool { return fssandbox.Stage() != "" }

// RunSandboxChild runs the sandboxed daemon's current step and returns the
// process exit code. It logs JSON to stderr, which Serve relays.
func RunSandboxChild() int {
	// This process is the sandboxed daemon and nothing else: the standard
	// logger is its own to set.
	logger := log.L.Logger
	logger.SetOutput(os.Stderr)
	_ = log.SetFormat(log.JSONFormat)
	ctx := log.WithLogger(context.Background(), log.L)
	var o virtiofsd.Options
	if err := json.Unmarshal([]byte(os.Getenv(envOptions)), &o); err != nil {
		log.G(ctx).WithError(err).Error("sandboxed daemon: bad options from the parent")
		return 1
	}
	logger.SetLevel(virtiofsd.LogLevel(o.LogLevel))
	if o.SandboxID != "" {
		ctx = log.WithLogger(ctx, log.G(ctx).WithField("sandbox", o.SandboxID))
	}
	seccomp, err := fssandbox.ParseSeccompAction(o.Seccomp)
	if err != nil {
		log.G(ctx).WithError(err).Error("sandboxed daemon: bad options from the parent")
		return 1
	}
	// The local time zone is read once, from /etc/localtime: before the
	// root becomes the guest's share.
	_ = time.Now().String()
	c, err := fssandbox.Setup()
	if err != nil {
		log.G(ctx).WithError(err).Error("virtio-fs daemon sandbox")
		return 1
	}
	_ = os.Unsetenv(envOptions)
	f := os.NewFile(uintptr(o.FD), "vhost-user socket")
	fl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		log.G(ctx).WithError(err).Error("sandboxed daemon: listening socket")
		return 1
	}
	for _, w := range c.Weaker {
		log.G(ctx).WithField("sandbox_mode", c.Mode).Warn("sandbox: " + w)
	}
	log.G(ctx).WithField("capabilities", capEff()).WithField("sandbox_mode", c.Mode).Debug("sandboxed daemon confined")
	log.G(ctx).WithFields(applyDaemonRuntime(o.ThreadPoolSize)).Debug("go runtime settings")
	ctx, stop := signal.NotifyContext(ctx, stopSignals...)
	defer stop()
	report := childStatusReporter(ctx)
	// Last, when nothing but serving is left (virtiofsd's --seccomp).
	if err := fssandbox.RestrictSyscalls(seccomp); err != nil {
		log.G(ctx).WithError(err).Error("virtio-fs daemon sandbox")
		return 1
	}
	if err := serveOn(ctx, fl.(*net.UnixListener), c.Root, c.ProcSelfFD, &o, report, seccomp); err != nil && !errors.Is(err, context.Canceled) {
		log.G(ctx).WithError(err).Error("sandboxed daemon")
		return 1
	}
	return 0
}

// capEff is this thread's effective capability mask in hex, as CapEff in
// /proc/PID/status shows it.
func capEff() string {
	c, err := fssandbox.EffectiveCapabilities()
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%016x", c)
}

// relayLog re-logs the JSON lines of the sandboxed daemon through ctx's
// logger, keeping their level and fields; other lines (go-fuse's own
// messages) are logged as warnings.
func relayLog(ctx context.Context, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("SCHED ")) {
			continue // the Go runtime's schedtrace line (schedtraceMillis)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			log.G(ctx).WithField("daemon_output", string(line)).Warn("virtio-fs daemon")
			continue
		}
		msg, _ := m["msg"].(string)
		var lvl log.Level
		if err := lvl.UnmarshalText([]byte(fmt.Sprint(m["level"]))); err != nil {
			lvl = log.InfoLevel
		}
		delete(m, "msg")
		delete(m, "level")
		delete(m, "time")
		log.G(ctx).WithFields(m).Log(lvl, msg)
	}
}
