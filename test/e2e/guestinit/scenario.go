package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
)

const (
	containerVol   = "/ctr/vol"
	hogWaitTimeout = 120 * time.Second
)

// agent runs the truth table's scenario (guest.ModeScenario): it plays a
// Kata agent and one container, mounts the share, triggers the volume's
// submount, lets the container (a process in its own mount namespace) keep
// only a bind mount of it, applies pressure and has the container read the
// volume. It never panics past its result.
func agent(params map[string]string, setupErr error) (r *guest.Result) {
	r = &guest.Result{Outcome: guest.Error}
	defer func() {
		if p := recover(); p != nil {
			r.Outcome, r.Error = guest.Error, fmt.Sprintf("panic: %v", p)
		}
	}()
	if setupErr != nil {
		r.Error = setupErr.Error()
		return r
	}
	if err := runAgent(r, params); err != nil {
		r.Outcome, r.Error = guest.Error, err.Error()
	}
	return r
}

func runAgent(r *guest.Result, params map[string]string) error {
	var err error
	r.Scenario = guest.Scenario(params[guest.KeyScenario])
	r.Pressure = guest.Pressure(params[guest.KeyPressure])
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	volume, marker := params[guest.KeyVolume], params[guest.KeyMarker]
	settle := params[guest.KeySettleMS]
	if settle == "" {
		settle = "3000"
	}
	if volume == "" || marker == "" || params[guest.KeyTag] == "" {
		return fmt.Errorf("kernel command line lacks %s, %s or %s", guest.KeyTag, guest.KeyVolume, guest.KeyMarker)
	}
	switch r.Scenario {
	case guest.BindDetach:
	case guest.SlaveUmount:
		// Agent side of the propagation: everything under / is shared, so
		// the share and its automount are too.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make / rshared: %w", err)
		}
	default:
		return fmt.Errorf("unknown scenario %q", r.Scenario)
	}
	if r.Pressure != guest.DropCaches && r.Pressure != guest.Memory {
		return fmt.Errorf("unknown pressure %q", r.Pressure)
	}

	if err := os.MkdirAll(shareMount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(params[guest.KeyTag], shareMount, "virtiofs", 0, ""); err != nil {
		return fmt.Errorf("mount virtiofs %s: %w", params[guest.KeyTag], err)
	}
	if r.ShareDev, err = statDev(shareMount, 0); err != nil {
		return err
	}
	vol := filepath.Join(shareMount, volume)
	// The first access to the volume triggers its automount, if announced.
	if r.VolumeDev, err = statDev(vol, 0); err != nil {
		return err
	}
	if got, err := os.ReadFile(filepath.Join(vol, "marker")); err != nil || string(got) != marker {
		return fmt.Errorf("volume marker before the container: %q, %v (want %q)", got, err, marker)
	}
	logf("share dev %d, volume dev %d", r.ShareDev, r.VolumeDev)

	if tree := params[guest.KeyTree]; tree != "" {
		// A realistic dentry cache: many FUSE dentries, all newer than the
		// volume's in the LRU once the container holds it.
		if r.TreeEntries, err = walk(filepath.Join(shareMount, tree)); err != nil {
			return err
		}
	}

	ctr, err := startContainer(r.Scenario, volume, marker, settle)
	if err != nil {
		return err
	}
	defer ctr.kill()

	// Drop the agent's mount on the volume: for bind-detach the container no
	// longer has one; for slave-umount this propagates into the container.
	if err := unix.Unmount(vol, unix.MNT_DETACH); err != nil {
		if !(errors.Is(err, unix.EINVAL) && !r.Submount()) {
			return fmt.Errorf("umount -l %s: %w", vol, err)
		}
		logf("%s is not a mount point (no submount announced)", vol)
	}
	for _, mi := range []string{"/proc/self/mountinfo", fmt.Sprintf("/proc/%d/mountinfo", ctr.cmd.Process.Pid)} {
		n, err := countMounts(mi, vol)
		if err != nil {
			return err
		}
		r.OriginalMounts += n
	}

	if r.DentriesBefore, err = dentries(); err != nil {
		return err
	}
	switch r.Pressure {
	case guest.DropCaches:
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2\n"), 0); err != nil {
			return fmt.Errorf("drop_caches: %w", err)
		}
	case guest.Memory:
		if r.OOMKilled, err = memoryPressure(); err != nil {
			return err
		}
	}
	if r.DentriesAfter, err = dentries(); err != nil {
		return err
	}
	logf("dentries %d -> %d after %s", r.DentriesBefore, r.DentriesAfter, r.Pressure)

	cr, err := ctr.check()
	if err != nil {
		return err
	}
	r.ContainerDev, r.Ops, r.Outcome, r.Error = cr.Dev, cr.Ops, cr.Outcome, cr.Error
	r.Attempts, r.ReadForMS, r.FailedAfterMS = cr.Attempts, cr.ReadForMS, cr.FailedAfterMS
	return nil
}

// statDev returns st_dev of path; flags may force a round trip to the daemon.
func statDev(path string, flags int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_BASIC_STATS, &stx); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor), nil
}

func walk(root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", path, err)
		}
		n++
		return nil
	})
	return n, err
}

// countMounts counts mountinfo entries whose mount point is path.
func countMounts(mountinfo, path string) (int, error) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && unescapeMountinfo(f[4]) == path {
			n++
		}
	}
	return n, nil
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dentries() (int, error) {
	b, err := os.ReadFile("/proc/sys/fs/dentry-state")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty dentry-state")
	}
	return strconv.Atoi(f[0])
}

// memoryPressure runs the hog until the OOM killer ends it. Reclaim works
// through every shrinker, the dentry cache included, before the kernel
// declares OOM.
func memoryPressure() (oomKilled bool, err error) {
	hog := exec.Command("/proc/self/exe", "hog")
	hog.Stdout, hog.Stderr = os.Stderr, os.Stderr
	if err := hog.Start(); err != nil {
		return false, fmt.Errorf("start memory hog: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- hog.Wait() }()
	select {
	case err = <-done:
	case <-time.After(hogWaitTimeout):
		_ = hog.Process.Kill()
		<-done
		return false, fmt.Errorf("memory hog still alive after %s", hogWaitTimeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true, nil
		}
	}
	return false, fmt.Errorf("memory hog ended without the OOM killer: %v", err)
}

func hog() {
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000\n"), 0)
	for {
		// MAP_POPULATE faults the pages in the kernel: far faster under TCG
		// than touching them from Go.
		if _, err := unix.Mmap(-1, 0, 8<<20, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE); err != nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

type containerProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// containerResult is what the container reports back to the agent.
type containerResult struct {
	Dev           uint64        `json:"dev"`
	Attempts      int           `json:"attempts"`
	ReadForMS     int           `json:"read_for_ms"`
	FailedAfterMS int           `json:"failed_after_ms,omitempty"`
	Ops           []guest.Op    `json:"ops"`
	Outcome       guest.Outcome `json:"outcome"`
	Error         string        `json:"error,omitempty"`
}

func startContainer(scenario guest.Scenario, volume, marker, settleMS string) (*containerProc, error) {
	cmd := exec.Command("/proc/self/exe", "container", string(scenario), volume, marker, settleMS)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	c := &containerProc{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := c.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		c.kill()
		return nil, fmt.Errorf("container setup: %q %v", strings.TrimSpace(line), err)
	}
	return c, nil
}

func (c *containerProc) check() (*containerResult, error) {
	if _, err := io.WriteString(c.in, "go\n"); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("container result: %w", err)
	}
	var cr containerResult
	if err := json.Unmarshal([]byte(line), &cr); err != nil {
		return nil, fmt.Errorf("container result %q: %w", line, err)
	}
	return &cr, nil
}

func (c *containerProc) kill() {
	_ = c.in.Close()
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// container runs in its own mount namespace, a copy of the agent's.
func container(args []string) int {
	if len(args) != 4 {
		fmt.Println("container: want scenario volume marker settle-ms")
		return 2
	}
	scenario, volume, marker := guest.Scenario(args[0]), args[1], args[2]
	settleMS, err := strconv.Atoi(args[3])
	if err != nil {
		fmt.Println("container: settle-ms:", err)
		return 2
	}
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("-1000\n"), 0)
	if err := containerSetup(scenario, filepath.Join(shareMount, volume)); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || strings.TrimSpace(line) != "go" {
		return 1
	}
	b, _ := json.Marshal(readUntil(marker, time.Duration(settleMS)*time.Millisecond))
	fmt.Println(string(b))
	return 0
}

// readUntil re-reads the volume until a read fails or settle has passed: a
// forgotten submount root fails every read from the moment the daemon has
// processed the FORGET, which may come after the first read.
func readUntil(marker string, settle time.Duration) *containerResult {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		cr := readVolume(marker)
		cr.Attempts = attempt
		cr.ReadForMS = int(time.Since(start).Milliseconds())
		if cr.Outcome != guest.OK {
			cr.FailedAfterMS = cr.ReadForMS
			return cr
		}
		if time.Since(start) >= settle {
			return cr
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containerSetup(scenario guest.Scenario, vol string) error {
	propagation := map[guest.Scenario]uintptr{
		guest.BindDetach:  unix.MS_PRIVATE,
		guest.SlaveUmount: unix.MS_SLAVE,
	}[scenario]
	if propagation == 0 {
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|propagation, ""); err != nil {
		return fmt.Errorf("set / propagation: %w", err)
	}
	if err := os.MkdirAll(containerVol, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(vol, containerVol, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", vol, err)
	}
	if scenario == guest.BindDetach {
		// As after pivot_root: the container drops its copy of the share.
		if err := unix.Unmount(shareMount, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("umount -l %s: %w", shareMount, err)
		}
	}
	return nil
}

// readVolume makes the container touch the volume in three ways that each
// need the daemon to know the submount root's nodeid.
func readVolume(marker string) *containerResult {
	cr := &containerResult{}
	record := func(name string, err error) {
		op := guest.Op{Name: name}
		if err != nil {
			op.Error = err.Error()
			var errno unix.Errno
			if errors.As(err, &errno) {
				op.Errno = unix.ErrnoName(errno)
			}
		}
		cr.Ops = append(cr.Ops, op)
	}
	dev, err := statDev(containerVol, unix.AT_STATX_FORCE_SYNC)
	cr.Dev = dev
	record("statx-force-sync", err)
	_, err = os.ReadDir(containerVol)
	record("readdir", err)
	got, err := os.ReadFile(filepath.Join(containerVol, "marker"))
	record("read-marker", err)

	cr.Outcome = guest.OK
	for _, op := range cr.Ops {
		switch {
		case op.Errno == "EBADF":
			cr.Outcome = guest.EBADF
		case op.Error != "" && cr.Outcome == guest.OK:
			cr.Outcome, cr.Error = guest.Error, op.Name+": "+op.Error
		}
	}
	if cr.Outcome == guest.OK && string(got) != marker {
		cr.Outcome, cr.Error = guest.WrongFile, fmt.Sprintf("marker %q, want %q", got, marker)
	}
	return cr
}
