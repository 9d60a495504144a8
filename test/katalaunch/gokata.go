package katalaunch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kata-submount-guard/kata-submount-guard/test/katabuild"
)

// GoTags are the Kata Go runtimes whose launch code the tests run: 3.0.2
// (the 2.x/3.0 legacy argv), 3.2.0 (the first Rust-virtiofsd argv, --xattr
// with guest SELinux) and 4.1.0.
var GoTags = []string{"3.0.2", "3.2.0", "4.1.0"}

// Fixture is the test-only file, relative to the repository, compiled into
// Kata's virtcontainers package.
const Fixture = "test/katalaunch/testdata/ksg_launch_test.go"

// KataGo is one tag's Go runtime as test/setup/70-kata.sh left it in the
// cache.
type KataGo struct {
	Tag string
	// Dir is $KSG_CACHE/kata/<tag>.
	Dir string
}

// Runtime is the extracted src/runtime of the tag.
func (k KataGo) Runtime() string { return k.tree().Runtime() }

func (k KataGo) tree() katabuild.Tree { return katabuild.Tree{Tag: k.Tag, Dir: k.Dir} }

// Defaults are the virtio-fs settings of the tag's default QEMU
// configuration (config/configuration-qemu.toml, which 70-kata.sh generated
// from Kata's template with Kata's Makefile).
type Defaults struct {
	ExtraArgs           []string `toml:"virtio_fs_extra_args"`
	Cache               string   `toml:"virtio_fs_cache"`
	DisableGuestSELinux *bool    `toml:"disable_guest_selinux"`
}

// Defaults reads the tag's default configuration.
func (k KataGo) Defaults() (Defaults, error) {
	var f struct {
		Hypervisor struct {
			QEMU Defaults `toml:"qemu"`
		} `toml:"hypervisor"`
	}
	path := filepath.Join(k.Runtime(), "config", "configuration-qemu.toml")
	if _, err := toml.DecodeFile(path, &f); err != nil {
		return Defaults{}, fmt.Errorf("kata %s defaults: %w", k.Tag, err)
	}
	return f.Hypervisor.QEMU, nil
}

// BuildLauncher compiles Fixture into the tag's virtcontainers package
// (katabuild: Kata's own test files left out, as their TestMain fakes
// utils.StartCmd, the very call that starts the daemon) and returns the test
// binary, built once.
func (k KataGo) BuildLauncher(ctx context.Context, repoRoot string) (string, error) {
	return k.tree().TestBinary(ctx, "virtcontainers", filepath.Join(repoRoot, Fixture))
}

// GoLaunch is what Kata's Go runtime starts a daemon from.
type GoLaunch struct {
	// Daemon is virtio_fs_daemon.
	Daemon    string
	SandboxID string
	// SharedPath is <root>/sandboxes/<id>/shared.
	SharedPath string
	// VMStorePath stands for /run/vc/vm: the socket is
	// <VMStorePath>/<id>/vhost-fs.sock.
	VMStorePath         string
	Cache               string
	ExtraArgs           []string
	DisableGuestSELinux bool
}

// GoDaemon is a daemon Kata's Go code started, held by the launcher
// process until Stop.
type GoDaemon struct {
	Pid    int
	Socket string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *lockedLines
	done   chan struct{}
}

type lockedLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *lockedLines) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *lockedLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// LauncherArgs run the fixture's test alone in BuildLauncher's binary.
var LauncherArgs = []string{"-test.run", "^TestKSGLaunchVirtiofsd$", "-test.count=1"}

// Socket is where Kata's Go runtime puts the vhost-user socket:
// <VMStorePath>/<id>/vhost-fs.sock.
func (l GoLaunch) Socket() string {
	return filepath.Join(l.VMStorePath, l.SandboxID, "vhost-fs.sock")
}

// Env is the launcher's environment for l (added to the caller's); it also
// makes the socket's directory, which Kata's sandbox has made by then.
// The launcher prints "KSG-STARTED pid=N socket=PATH" once Kata's Start
// returned, and has Kata stop the daemon when its stdin ends.
func (l GoLaunch) Env() ([]string, error) {
	extra, err := json.Marshal(l.ExtraArgs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(l.Socket()), 0o750); err != nil {
		return nil, err
	}
	return []string{
		"KSG_VIRTIO_FS_DAEMON=" + l.Daemon, "KSG_SANDBOX_ID=" + l.SandboxID, "KSG_SHARED_PATH=" + l.SharedPath,
		"KSG_VM_STORE_PATH=" + l.VMStorePath, "KSG_VIRTIO_FS_CACHE=" + l.Cache, "KSG_VIRTIO_FS_EXTRA_ARGS=" + string(extra),
		"KSG_DISABLE_GUEST_SELINUX=" + strconv.FormatBool(l.DisableGuestSELinux),
	}, nil
}

// StartGo runs launcher (BuildLauncher's binary) to start l's daemon
// through Kata's own code and returns once Kata's Start returned.
func StartGo(ctx context.Context, launcher string, l GoLaunch, timeout time.Duration) (*GoDaemon, error) {
	env, err := l.Env()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, launcher, LauncherArgs...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &GoDaemon{cmd: cmd, stdin: stdin, out: &lockedLines{}, done: make(chan struct{})}
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.out.add(sc.Text())
			if strings.HasPrefix(sc.Text(), "KSG-STARTED ") {
				started <- sc.Text()
			}
		}
		cmd.Wait()
		close(d.done)
	}()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case line := <-started:
		if _, err := fmt.Sscanf(line, "KSG-STARTED pid=%d socket=%s", &d.Pid, &d.Socket); err != nil {
			d.Stop()
			return nil, fmt.Errorf("launcher said %q: %w", line, err)
		}
		return d, nil
	case <-d.done:
		return nil, fmt.Errorf("Kata's launch code did not start %s: %w; output:\n%s", l.Daemon, errors.New(d.cmd.ProcessState.String()), d.out)
	case <-tm.C:
		cmd.Process.Kill()
		<-d.done
		return nil, fmt.Errorf("Kata's launch code did not return within %s; output:\n%s", timeout, d.out)
	}
}

// Stop has Kata's code stop the daemon (SIGKILL, then the socket removed)
// and waits for the launcher to end; it returns the launcher's output.
func (d *GoDaemon) Stop() (string, error) {
	d.stdin.Close()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		return d.out.String(), errors.New("launcher did not stop within 30s")
	}
	out := d.out.String()
	if !strings.Contains(out, "KSG-STOPPED") {
		return out, fmt.Errorf("Kata's Stop did not complete (%s)", d.cmd.ProcessState)
	}
	return out, nil
}

// Output is what the launcher printed so far.
func (d *GoDaemon) Output() string { return d.out.String() }
