package katalaunch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What runtime-rs 4.1.0 does to start virtio_fs_daemon, step by step, from
// kata-containers 4.1.0 (ddcb1ad8d23c; archive
// kata-containers-4.1.0-runtime-rs-deploy.tar.gz in ../shared/upstream):
//
//   - libs/kata-types/src/config/hypervisor/mod.rs 1572-1579 (adjust_virtio_fs)
//     and libs/kata-types/src/lib.rs 86-100 (resolve_path!): the configured
//     daemon path is canonicalized; a path that does not exist fails the
//     configuration.
//   - src/runtime-rs/crates/resource/src/share_fs/utils.rs 69-73
//     (get_host_ro_shared_path): the shared dir is
//     /run/kata-containers/shared/sandboxes/<sid>/ro (rootless: under the
//     rootless dir), created if missing (share_virtio_fs_standalone.rs 76-77).
//   - share_virtio_fs.rs 30-35: the socket is <jailer root>/virtiofsd.sock.
//   - share_virtio_fs_standalone.rs 75-101 (virtiofsd_args): --socket-path
//     SOCK --shared-dir DIR --cache MODE, then virtio_fs_extra_args, then
//     --xattr unless disable_guest_selinux.
//   - 107-117, 126-134: rootless: the socket argument is its file name and
//     the daemon's working directory is the socket's parent.
//   - 123-124, 136: spawned with stderr piped (stdin, stdout inherited); no
//     descriptor is passed.
//   - 138-147: rootless: waits up to 10 x 100 ms for the socket to exist,
//     then chowns it to its parent directory's owner (hypervisor/src/utils.rs
//     231-244).
//   - 155-171, 192-209 (run_virtiofsd): reads stderr line by line, logs each,
//     and the start succeeds at the first line containing "Waiting for
//     vhost-user socket connection". There is no timeout ("TODO: support
//     timeout", line 158): a daemon that never prints it hangs sandbox
//     creation; one that exits without it ends the reader, drops the sender
//     and panics the runtime at rx.recv().await.unwrap() (line 159).
//   - 174-189 (shutdown_virtiofsd): SIGKILL to the daemon's pid; the socket
//     is left where it is.
//
// RuntimeRS does the same, with a timeout in place of the endless wait and an
// error in place of the panic.

// runtimeRSReady is what run_virtiofsd looks for (share_virtio_fs_standalone.rs
// line 202), written here from the source and not taken from kata-virtiofsd.
const runtimeRSReady = "Waiting for vhost-user socket connection"

// RuntimeRS is the configuration runtime-rs 4.1.0 starts a daemon from.
type RuntimeRS struct {
	// Daemon is virtio_fs_daemon as configured.
	Daemon string
	// SharedRoot stands for /run/kata-containers/shared/sandboxes.
	SharedRoot string
	SandboxID  string
	// Socket is <jailer root>/virtiofsd.sock.
	Socket string
	// Cache is virtio_fs_cache.
	Cache string
	// ExtraArgs is virtio_fs_extra_args; nil means runtime-rs's default.
	ExtraArgs           []string
	DisableGuestSELinux bool
	Rootless            bool
	// Log receives each stderr line as runtime-rs logs it ("source:
	// virtiofsd <line>"); nil: discarded.
	Log io.Writer
	// Stdout is the daemon's inherited stdout; nil: /dev/null.
	Stdout io.Writer
	// Env is added to the daemon's environment (runtime-rs passes its own).
	Env []string
}

// RuntimeRSDefaultExtraArgs is runtime-rs 4.1.0's default
// virtio_fs_extra_args (src/runtime-rs/Makefile line 249,
// DEFVIRTIOFSEXTRAARGS, into configuration-qemu-runtime-rs.toml.in).
var RuntimeRSDefaultExtraArgs = []string{"--thread-pool-size=1", "-o", "announce_submounts"}

// RuntimeRSDaemon is a daemon runtime-rs started.
type RuntimeRSDaemon struct {
	cmd  *exec.Cmd
	Args []string // without argv[0]
	Path string   // the canonical daemon path it ran
	done chan struct{}
	err  error
}

// ErrNoReadyLine: the daemon ended its stderr without the ready line.
var ErrNoReadyLine = errors.New("virtio-fs daemon closed stderr without printing the ready line (runtime-rs 4.1.0 panics here)")

// ErrReadyTimeout: no ready line within the test's timeout (runtime-rs 4.1.0
// waits for ever).
var ErrReadyTimeout = errors.New("no ready line from the virtio-fs daemon in time (runtime-rs 4.1.0 would wait for ever)")

// SharedDir is the directory runtime-rs shares: <root>/<sid>/ro.
func (c RuntimeRS) SharedDir() string {
	return filepath.Join(c.SharedRoot, c.SandboxID, "ro")
}

// Argv is virtiofsd_args() for socketArg.
func (c RuntimeRS) Argv(socketArg string) []string {
	args := []string{"--socket-path", socketArg, "--shared-dir", c.SharedDir(), "--cache", c.Cache}
	extra := c.ExtraArgs
	if extra == nil {
		extra = RuntimeRSDefaultExtraArgs
	}
	args = append(args, extra...)
	if !c.DisableGuestSELinux {
		args = append(args, "--xattr")
	}
	return args
}

// StartRuntimeRS starts the daemon as runtime-rs 4.1.0 does and waits up to
// timeout for its ready line. On any error the daemon, if started, has been
// killed.
func StartRuntimeRS(ctx context.Context, c RuntimeRS, timeout time.Duration) (*RuntimeRSDaemon, error) {
	path, err := filepath.EvalSymlinks(c.Daemon)
	if err == nil {
		path, err = filepath.Abs(path)
	}
	if err != nil {
		return nil, fmt.Errorf("Virtio-fs daemon path %s is invalid: %w", c.Daemon, err)
	}
	if err := os.MkdirAll(c.SharedDir(), 0o750); err != nil {
		return nil, err
	}
	socketArg := c.Socket
	if c.Rootless {
		socketArg = filepath.Base(c.Socket)
	}
	d := &RuntimeRSDaemon{Args: c.Argv(socketArg), Path: path, done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, path, d.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdout = c.Stdout
	if c.Rootless {
		cmd.Dir = filepath.Dir(c.Socket)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn virtiofsd: %w", err)
	}
	d.cmd = cmd
	if c.Rootless {
		for range 10 {
			if _, err := os.Stat(c.Socket); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := chownToParent(c.Socket); err != nil {
			d.Kill()
			return nil, err
		}
	}

	ready := make(chan struct{})
	var once sync.Once
	logw := c.Log
	if logw == nil {
		logw = io.Discard
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if trimmed := strings.TrimRight(line, " \t\r\n"); trimmed != "" {
				fmt.Fprintf(logw, "source: virtiofsd %s\n", trimmed)
			}
			if strings.Contains(line, runtimeRSReady) {
				once.Do(func() { close(ready) })
			}
		}
		d.err = cmd.Wait()
		close(d.done)
	}()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-ready:
		return d, nil
	case <-d.done:
		// The line may have come just before the end.
		select {
		case <-ready:
			return d, nil
		default:
		}
		return nil, fmt.Errorf("%w (%v)", ErrNoReadyLine, d.err)
	case <-tm.C:
		d.Kill()
		return nil, ErrReadyTimeout
	}
}

// chownToParent is chown_to_parent: the socket gets its directory's owner.
func chownToParent(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(abs), &st); err != nil {
		return err
	}
	return os.Chown(abs, int(st.Uid), int(st.Gid))
}

// Pid is the daemon's process id, as runtime-rs records it.
func (d *RuntimeRSDaemon) Pid() int { return d.cmd.Process.Pid }

// Kill is shutdown_virtiofsd: SIGKILL, an already ended daemon is fine; it
// also reaps the process.
func (d *RuntimeRSDaemon) Kill() error {
	err := d.cmd.Process.Signal(syscall.SIGKILL)
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-d.done
	return nil
}

// Exited reports whether the daemon has ended, and how.
func (d *RuntimeRSDaemon) Exited() (bool, error) {
	select {
	case <-d.done:
		return true, d.err
	default:
		return false, nil
	}
}
