package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsdaemon"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// TestRecoverThroughThePlan follows protection recover from containerd to
// the daemon: a pod created through CRI and our shim with
// virtiofs_protection = "recover" on a vulnerable guest kernel gets a plan
// that says recover; kata-virtiofsd, started with the command line Kata
// gives virtio_fs_daemon for that pod and no --guard-protection, reads the
// plan and serves the share itself; a guest driver that forgets the
// submount root's node ID and goes on using it (what a kernel without Linux
// c4d361f66ac9 does; the VM suite shows it with a real one) is served, and
// the recovery is counted in the status file, which pod removal deletes
// with the plan. On a fixed kernel the plan asks for no protection.
func TestRecoverThroughThePlan(t *testing.T) {
	kernels := requireKernels(t)
	daemon := kataVirtiofsd(t)
	cfgPath, stateDir := writeKataConfig(t, t.TempDir(), kataConfig{kernel: kernels.vulnerable, onVulnerable: "warn", protection: "recover"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)

	podID, pl := c.runKataPod(t, pod{name: "recovered"}, stateDir)
	require.Equal(t, verdict.Vulnerable, pl.Kernel.Verdict)
	require.Equal(t, plan.Warn, pl.Action)
	require.Equal(t, protection.Recover, pl.Protection)
	require.Contains(t, pl.Reason, "protection recover")

	// What Kata does next: the pod's shared directory, a volume mounted in
	// it, virtio_fs_daemon started on a listening socket as fd 3.
	shared := filepath.Join(t.TempDir(), "sandboxes", podID, "shared")
	vol := filepath.Join(shared, "vol")
	require.NoError(t, os.MkdirAll(vol, 0o755))
	require.NoError(t, unix.Mount("tmpfs", vol, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(vol, unix.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(vol, "marker"), []byte("pod volume"), 0o644))
	sock := filepath.Join(t.TempDir(), "vhost.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	require.NoError(t, err)
	l.Close()
	// Kata's argv (Kata also passes --syslog; the log goes to stderr here)
	// with the state dir of [submount_guard] in virtio_fs_extra_args.
	var dlog testutil.SyncBuffer
	cmd := exec.Command(daemon, "--cache=auto", "--shared-dir="+shared, "--fd=3",
		"--thread-pool-size=1", "--announce-submounts", "--guard-state-dir="+stateDir)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = &dlog, &dlog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	lf.Close()
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	statusPath := statedir.StatusPath(stateDir, podID)
	g := newGuestDriver(t, sock)
	g.init(t)
	st, err := fsdaemon.ReadStatus(statusPath)
	require.NoError(t, err, "kata-virtiofsd serves with protection recover: status file; log:\n%s", dlog.String())
	require.Equal(t, "recover", st.Protection)
	require.Equal(t, cmd.Process.Pid, st.PID)

	v := g.lookup(t, fuse.FUSE_ROOT_ID, "vol")
	require.NotZero(t, v.Attr.Flags&fuse.ATTR_SUBMOUNT, "the volume is announced as a submount")
	g.forget(t, v.NodeId, 1)
	require.Zero(t, g.getattr(t, v.NodeId), "request on the forgotten submount root")
	m := g.lookup(t, v.NodeId, "marker")
	require.EqualValues(t, len("pod volume"), m.Attr.Size)
	require.Eventually(t, func() bool {
		st, err := fsdaemon.ReadStatus(statusPath)
		return err == nil && st.Recoveries == 1
	}, 10*time.Second, 20*time.Millisecond, "recovery counted in %s", statusPath)

	g.close()
	select {
	case <-done:
		require.NoError(t, waitErr, "log:\n%s", dlog.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("kata-virtiofsd still running after the frontend hung up; log:\n%s", dlog.String())
	}
	st, err = fsdaemon.ReadStatus(statusPath)
	require.NoError(t, err)
	require.False(t, st.Running)
	require.EqualValues(t, 1, st.Recoveries)
	out := dlog.String()
	for _, want := range []string{"protection=recover", "protection_from=plan", "serving the share with kata-virtiofsd's own daemon",
		"sandbox=" + podID, "reinstated it", "totals at exit"} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 1, strings.Count(out, "reinstated it"), "one log line per recovery")

	c.removePod(t, podID)
	eventually(t, func() bool { _, err := plan.Read(stateDir, podID); return err != nil }, "plan not removed after rmp")
	require.NoFileExists(t, statusPath, "status file removed with the plan")
}

// TestRecoverPlanOnFixedKernel: a fixed guest kernel needs no protection,
// whatever virtiofs_protection says.
func TestRecoverPlanOnFixedKernel(t *testing.T) {
	kernels := requireKernels(t)
	cfgPath, stateDir := writeKataConfig(t, t.TempDir(), kataConfig{kernel: kernels.fixed, onVulnerable: "warn", protection: "recover"})
	c := startContainerd(t, containerdOptions{env: []string{"KATA_CONF_FILE=" + cfgPath}})
	c.useCRI(t)
	podID, pl := c.runKataPod(t, pod{name: "fixed"}, stateDir)
	require.Equal(t, verdict.Fixed, pl.Kernel.Verdict)
	require.Equal(t, protection.None, pl.Protection, "a fixed kernel needs no protection")
	c.removePod(t, podID)
}

var kvfsOnce struct {
	sync.Once
	path string
	err  error
}

// kataVirtiofsd builds cmd/kata-virtiofsd as make build does (without cgo:
// its sandbox drops capabilities in all threads).
func kataVirtiofsd(t testing.TB) string {
	t.Helper()
	requireIntegration(t)
	require.NoError(t, suite.err)
	kvfsOnce.Do(func() {
		kvfsOnce.path = filepath.Join(suite.bins.dir, "kata-virtiofsd")
		cmd := exec.Command("go", "build", "-trimpath", "-o", kvfsOnce.path, "./cmd/kata-virtiofsd")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			kvfsOnce.err = fmt.Errorf("go build ./cmd/kata-virtiofsd: %w\n%s", err, out)
		}
	})
	require.NoError(t, kvfsOnce.err)
	return kvfsOnce.path
}

// guestDriver is the part of a guest's virtio-fs driver the test needs:
// vhost-user set up as QEMU does, FUSE requests on the request queue,
// FORGET on the high-priority one.
type guestDriver struct {
	dev       *vut.FSDevice
	unique    atomic.Uint64
	closeOnce sync.Once
}

func newGuestDriver(t *testing.T, sock string) *guestDriver {
	t.Helper()
	dev, err := vut.DialFS(sock, 10*time.Second)
	require.NoError(t, err)
	g := &guestDriver{dev: dev}
	t.Cleanup(g.close)
	return g
}

// close hangs up, as QEMU does when the VM ends.
func (g *guestDriver) close() {
	g.closeOnce.Do(g.dev.Close)
}

// FUSE opcodes (include/uapi/linux/fuse.h).
const (
	opLookup  = 1
	opForget  = 2
	opGetattr = 3
	opInit    = 26
)

func wire[T any](v *T) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}

func unwire[T any](b []byte) *T {
	var v T
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), b)
	return &v
}

// call sends one request with body in (after the header) and returns the
// reply's errno and body; outSize < 0: no reply (FORGET).
func (g *guestDriver) call(t *testing.T, q *vut.Queue, opcode uint32, node uint64, in []byte, outSize int) (syscall.Errno, []byte) {
	t.Helper()
	h := fuse.InHeader{Opcode: opcode, NodeId: node, Unique: g.unique.Add(1)}
	h.Length = uint32(int(unsafe.Sizeof(h)) + len(in))
	var writable []int
	if outSize >= 0 {
		writable = []int{int(unsafe.Sizeof(fuse.OutHeader{})) + outSize}
	}
	out, err := q.Do([][]byte{append(wire(&h), in...)}, writable)
	require.NoError(t, err)
	if outSize < 0 {
		return 0, nil
	}
	oh := unwire[fuse.OutHeader](out)
	require.Equal(t, h.Unique, oh.Unique)
	return syscall.Errno(-oh.Status), out[unsafe.Sizeof(fuse.OutHeader{}):]
}

func (g *guestDriver) init(t *testing.T) {
	t.Helper()
	flags := uint64(fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES | fuse.CAP_SUBMOUNTS | fuse.CAP_PARALLEL_DIROPS)
	in := fuse.InitIn{Major: 7, Minor: 36, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	errno, _ := g.call(t, g.dev.Requests, opInit, 0, wire(&in)[unsafe.Sizeof(fuse.InHeader{}):], int(unsafe.Sizeof(fuse.InitOut{})))
	require.Zero(t, errno, "INIT")
}

func (g *guestDriver) lookup(t *testing.T, parent uint64, name string) *fuse.EntryOut {
	t.Helper()
	errno, body := g.call(t, g.dev.Requests, opLookup, parent, append([]byte(name), 0), int(unsafe.Sizeof(fuse.EntryOut{})))
	require.Zero(t, errno, "LOOKUP %s in %d", name, parent)
	return unwire[fuse.EntryOut](body)
}

func (g *guestDriver) forget(t *testing.T, node, n uint64) {
	t.Helper()
	in := fuse.ForgetIn{Nlookup: n}
	g.call(t, g.dev.Hiprio, opForget, node, wire(&in)[unsafe.Sizeof(fuse.InHeader{}):], -1)
}

func (g *guestDriver) getattr(t *testing.T, node uint64) syscall.Errno {
	t.Helper()
	var in fuse.GetAttrIn
	errno, _ := g.call(t, g.dev.Requests, opGetattr, node, wire(&in)[unsafe.Sizeof(fuse.InHeader{}):], int(unsafe.Sizeof(fuse.AttrOut{})))
	return errno
}
