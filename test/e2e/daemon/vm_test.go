package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Daemon kinds the VM tests run.
const (
	ours = "kata-virtiofsd"
	rust = "virtiofsd-rust"
	cvfs = "virtiofsd-c"
)

const cDaemonPath = "/usr/lib/qemu/virtiofsd"

func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// guestKernel returns the fixed guest kernel test/kernels built, or the
// bzImage $KSG_DAEMON_KERNEL names.
func guestKernel(t testing.TB) string {
	t.Helper()
	if k := os.Getenv("KSG_DAEMON_KERNEL"); k != "" {
		return k
	}
	out, err := exec.Command(filepath.Join(repoRoot(t), "test/kernels/build.sh"), "--print-dir").Output()
	testutil.Require(t, err == nil, "guest kernels not built (test/setup runs test/kernels/build.sh)")
	k := filepath.Join(strings.TrimSpace(string(out)), "fixed", "bzImage")
	_, err = os.Stat(k)
	testutil.Require(t, err == nil, k+" missing")
	return k
}

// buildOnce builds Go packages once per test binary run.
type buildOnce struct {
	once sync.Once
	path string
	err  error
}

var (
	initBuild   buildOnce
	daemonBuild buildOnce
	scratch     string
)

func TestMain(m *testing.M) {
	var err error
	scratch, err = os.MkdirTemp("", "ksg-daemon-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(scratch)
	os.Exit(code)
}

func goBuild(t testing.TB, b *buildOnce, pkg, name string) string {
	t.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(scratch, name)
		cmd := exec.Command("go", "build", "-trimpath", "-o", b.path, pkg)
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v: %s", pkg, err, out)
		}
	})
	require.NoError(t, b.err)
	return b.path
}

// initramfs returns a newc cpio archive with guestinit as /init.
func initramfs(t testing.TB) string {
	t.Helper()
	p := filepath.Join(scratch, "initramfs.cpio")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	bin := goBuild(t, &initBuild, "./test/e2e/daemon/guestinit", "guestinit")
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	var buf bytes.Buffer
	entries := []cpioEntry{
		{name: "dev", mode: 0o040755}, {name: "dev/console", mode: 0o020600, major: 5, minor: 1},
		{name: "proc", mode: 0o040755}, {name: "sys", mode: 0o040755}, {name: "mnt", mode: 0o040755},
		{name: "init", mode: 0o100755, data: data},
	}
	writeCpio(&buf, entries)
	require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

type cpioEntry struct {
	name         string
	mode         uint32
	data         []byte
	major, minor uint32
}

// writeCpio writes the "newc" format the kernel unpacks as initramfs.
func writeCpio(w *bytes.Buffer, entries []cpioEntry) {
	pad := func() {
		for w.Len()%4 != 0 {
			w.WriteByte(0)
		}
	}
	for i, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		nlink := 1
		if e.mode&0o170000 == 0o040000 {
			nlink = 2
		}
		fmt.Fprintf(w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			i+1, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(e.name)+1, 0)
		w.WriteString(e.name + "\x00")
		pad()
		w.Write(e.data)
		pad()
	}
}

// share makes the directory the daemons serve, as the scenarios expect it.
func share(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hello"), []byte("hello from the host\n"), 0o644))
	return dir
}

// daemon is a running virtio-fs daemon listening on sock.
type daemon struct {
	kind string
	cmd  *exec.Cmd
	sock string
	out  *testutil.SyncBuffer
	done chan error
}

// startDaemon starts kind on shared with Kata's arguments and a listening
// socket on fd 3, as Kata starts virtio_fs_daemon.
func startDaemon(t testing.TB, kind, shared string) *daemon {
	t.Helper()
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "vhost-fs.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	require.NoError(t, err)
	l.Close()
	defer lf.Close()

	kata := []string{"--cache=auto", "--shared-dir=" + shared, "--fd=3", "--thread-pool-size=1", "--announce-submounts"}
	var cmd *exec.Cmd
	switch kind {
	case ours:
		bin := goBuild(t, &daemonBuild, "./cmd/kata-virtiofsd", "kata-virtiofsd")
		cmd = exec.Command(bin, append(kata, "--guard-state-dir="+t.TempDir())...)
	case rust:
		cmd = exec.Command(testutil.RequiresCacheFile(t, "bin/virtiofsd-rust"), kata...)
	case cvfs:
		_, err := os.Stat(cDaemonPath)
		testutil.Require(t, err == nil, cDaemonPath+" missing (qemu-system-common)")
		cmd = exec.Command(cDaemonPath, "--fd=3", "-o", "source="+shared, "-o", "cache=auto", "-o", "announce_submounts", "--thread-pool-size=1")
	default:
		t.Fatalf("unknown daemon %s", kind)
	}
	d := &daemon{kind: kind, cmd: cmd, sock: sock, out: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	require.NoError(t, cmd.Start())
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-d.done
			t.Errorf("%s still running 10s after QEMU exited; killed", kind)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", kind, d.out.String())
		}
	})
	return d
}

// memory sums, over the daemon and its descendants (every daemon here serves
// from a sandboxed child), VmHWM (peak resident, including the guest memory
// pages the daemon touched) and RssAnon (its private memory now), in kB.
func (d *daemon) memory() (peakKB, anonKB int) {
	for _, pid := range append([]int{d.cmd.Process.Pid}, descendants(d.cmd.Process.Pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
			out = append(out, descendants(p)...)
		}
	}
	return out
}

// guestRun boots the guest against d's socket with scenario mode and
// returns its result lines. onSample runs when the guest prints KSG-SAMPLE,
// while the VM and the daemon are still up.
func guestRun(t testing.TB, d *daemon, mode string, timeout time.Duration, onSample func()) []string {
	t.Helper()
	qemu := testutil.RequiresCommand(t, "qemu-system-x86_64")
	kernel, initrd := guestKernel(t), initramfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-accel", "tcg", "-m", "512M", "-smp", "1", "-nographic", "-no-reboot", "-nodefaults",
		"-serial", "stdio",
		"-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
		"-chardev", "socket,id=vfs,path="+d.sock,
		"-device", "vhost-user-fs-pci,chardev=vfs,tag=ksg,queue-size=1024",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet ksg.mode="+mode)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var lines, console []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		console = append(console, l)
		// Kernel messages may share the line with the init's output.
		if i := strings.Index(l, "KSG-"); i >= 0 {
			l = l[i:]
			lines = append(lines, l)
			if l == "KSG-SAMPLE" && onSample != nil {
				onSample()
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if ctx.Err() != nil || len(lines) == 0 || lines[len(lines)-1] != "KSG-DONE" {
		t.Logf("guest console:\n%s\nqemu stderr:\n%s\ndaemon output:\n%s", strings.Join(console, "\n"), stderr.String(), d.out.String())
		t.Fatalf("guest did not finish scenario %s against %s (qemu: %v, ctx: %v)", mode, d.kind, err, ctx.Err())
	}
	return lines
}
