package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// VM is one guest boot: a TCG guest with a vhost-user-fs device.
type VM struct {
	QEMU    string
	Kernel  string // bzImage
	Initrd  string
	Socket  string // the daemon's vhost-user socket; "" for no virtio-fs device
	Tag     string // virtio-fs tag
	Console string // serial console log file
	Append  []string
	MemMB   int
	// QueueSize of the virtio-fs request queues; 0 for QEMU's default (128).
	QueueSize int
	Timeout   time.Duration
	// OnLine, if set, sees each console line as the guest prints it, while
	// the guest and its daemon still run.
	OnLine func(line string)
}

func (s VM) args() []string {
	mem := strconv.Itoa(s.MemMB) + "M"
	args := []string{
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-smp", "1", "-m", mem,
		// vhost-user needs guest RAM the daemon can map.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on", "-numa", "node,memdev=mem",
	}
	if s.Socket != "" {
		dev := "vhost-user-fs-pci,chardev=vfs,tag=" + s.Tag
		if s.QueueSize > 0 {
			dev += ",queue-size=" + strconv.Itoa(s.QueueSize)
		}
		args = append(args, "-chardev", "socket,id=vfs,path="+s.Socket, "-device", dev)
	}
	return append(args,
		// The console streams through QEMU's stdout into Console (and OnLine).
		"-serial", "stdio",
		"-kernel", s.Kernel, "-initrd", s.Initrd,
		"-append", strings.Join(append(bootParams(), s.Append...), " "),
	)
}

// bootParams are the kernel parameters every guest gets. no_timer_check is
// one Kata passes too: under TCG on a loaded host the IO-APIC timer check can
// miss its ticks and panic the guest before init runs (seen once in CI).
func bootParams() []string {
	return []string{"console=ttyS0", "panic=-1", "no_timer_check"}
}

// ErrHung is wrapped when the guest did not power off in time.
var ErrHung = errors.New("guest hung")

// Run boots the guest and waits for it to power off. A guest that hangs past
// the timeout is killed; the error then carries the console's tail. The
// console is returned in every case.
func Run(ctx context.Context, s VM) (console []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	f, err := os.Create(s.Console)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := &consoleWriter{w: f, onLine: s.OnLine}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.QEMU, s.args()...)
	cmd.Stdout, cmd.Stderr = out, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	out.flush()
	console, _ = os.ReadFile(s.Console)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return console, fmt.Errorf("%w: killed after %s; console tail:\n%s", ErrHung, s.Timeout, Tail(console, 40))
	case runErr != nil:
		return console, fmt.Errorf("qemu: %w: %s; console tail:\n%s", runErr, strings.TrimSpace(stderr.String()), Tail(console, 40))
	}
	return console, nil
}

// consoleWriter copies the serial console to a file and hands each complete
// line (without \r\n) to onLine.
type consoleWriter struct {
	mu      sync.Mutex
	w       *os.File
	onLine  func(string)
	partial []byte
}

func (c *consoleWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.w.Write(p)
	if c.onLine == nil {
		return n, err
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.onLine(strings.TrimRight(string(c.partial[:i]), "\r"))
		c.partial = c.partial[i+1:]
	}
	return n, err
}

func (c *consoleWriter) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.onLine != nil && len(c.partial) > 0 {
		c.onLine(strings.TrimRight(string(c.partial), "\r"))
	}
	c.partial = nil
}

// Tail returns the last n lines of b.
func Tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
