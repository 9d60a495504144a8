package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// vmSpec is one guest boot: a TCG guest with a vhost-user-fs device.
type vmSpec struct {
	QEMU    string
	Kernel  string // bzImage
	Initrd  string
	Socket  string // the daemon's vhost-user socket; "" for no virtio-fs device
	Tag     string // virtio-fs tag
	Console string // serial console log file
	Append  []string
	MemMB   int
	Timeout time.Duration
}

func (s vmSpec) args() []string {
	mem := strconv.Itoa(s.MemMB) + "M"
	args := []string{
		"-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-smp", "1", "-m", mem,
		// vhost-user needs guest RAM the daemon can map.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on", "-numa", "node,memdev=mem",
	}
	if s.Socket != "" {
		args = append(args, "-chardev", "socket,id=vfs,path="+s.Socket, "-device", "vhost-user-fs-pci,chardev=vfs,tag="+s.Tag)
	}
	return append(args,
		"-serial", "file:"+s.Console,
		"-kernel", s.Kernel, "-initrd", s.Initrd,
		"-append", strings.Join(append([]string{"console=ttyS0", "panic=-1"}, s.Append...), " "),
	)
}

// errHung is wrapped when the guest did not power off in time.
var errHung = errors.New("guest hung")

// runVM boots the guest and waits for it to power off. A guest that hangs
// past the timeout is killed; the error then carries the console's tail.
func runVM(ctx context.Context, s vmSpec) (console []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.QEMU, s.args()...)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	console, _ = os.ReadFile(s.Console)
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return console, fmt.Errorf("%w: killed after %s; console tail:\n%s", errHung, s.Timeout, tail(console, 40))
	case runErr != nil:
		return console, fmt.Errorf("qemu: %w: %s; console tail:\n%s", runErr, strings.TrimSpace(stderr.String()), tail(console, 40))
	}
	return console, nil
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
