package fsdaemon

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/containerd/errdefs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// serveParsed runs Serve in this process (sandbox none) on the command line
// args plus a shared dir and socket path of its own; it returns the shared
// dir, the socket path and a function that waits for Serve's result.
func serveParsed(t *testing.T, args ...string) (dir, sock string, wait func() error) {
	t.Helper()
	dir = t.TempDir()
	sock = filepath.Join(t.TempDir(), "vhost.sock")
	o, err := virtiofsd.Parse(append([]string{"--shared-dir=" + dir, "--socket-path=" + sock, "--sandbox=none"}, args...))
	require.NoError(t, err)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- Serve(ctx, o) }()
	wait = sync.OnceValue(func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			return errors.New("Serve did not return within 20s")
		}
	})
	t.Cleanup(func() {
		cancel()
		if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	})
	return dir, sock, wait
}

// execSelf runs this test binary for the test name only, with env added.
func execSelf(t *testing.T, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// capSysResource is CAP_SYS_RESOURCE.
const capSysResource = 24

// hasCapability reports whether this process has capability c in effect.
func hasCapability(t *testing.T, c uint) bool {
	t.Helper()
	eff, err := strconv.ParseUint(procStatus(t, os.Getpid(), "CapEff"), 16, 64)
	require.NoError(t, err)
	return eff&(1<<c) != 0
}

// TestServeRefusesBeforeCreatingAnything gives Serve options its daemon
// cannot honour: one error naming them all, and no socket.
func TestServeRefusesBeforeCreatingAnything(t *testing.T) {
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "vhost.sock")
	o, err := virtiofsd.Parse([]string{"--shared-dir=" + t.TempDir(), "--socket-path=" + sock, "--sandbox=none",
		"--readonly", "--tag=myfs", "--posix-acl", "-o", "writeback"})
	require.NoError(t, err)
	err = Serve(context.Background(), o)
	require.ErrorIs(t, err, errdefs.ErrNotImplemented)
	require.EqualError(t, err, "kata-virtiofsd's own virtio-fs daemon cannot honour --posix-acl, -o writeback, --tag=myfs: "+
		"remove them from Kata's virtio_fs_extra_args (the README lists what serve mode supports): not implemented")
	ents, err := os.ReadDir(sockDir)
	require.NoError(t, err)
	require.Empty(t, ents, "a refused daemon left files behind")
}

// A thread pool larger than the process can have threads is refused with
// the bound, before anything is created.
func TestServeRefusesHugeThreadPool(t *testing.T) {
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "vhost.sock")
	o, err := virtiofsd.Parse([]string{"--shared-dir=" + t.TempDir(), "--socket-path=" + sock, "--sandbox=none",
		"--thread-pool-size=2147483647"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = Serve(ctx, o)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "--thread-pool-size=2147483647 is above 1024")
	ents, err := os.ReadDir(sockDir)
	require.NoError(t, err)
	require.Empty(t, ents)
}

// TestServeReadOnly serves a share with --readonly over vhost-user: reads
// work, a CREATE gets EROFS, the host directory is unchanged.
func TestServeReadOnly(t *testing.T) {
	dir, sock, wait := serveParsed(t, "--readonly", "--cache=never", "--allow-mmap")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "greeting"), []byte("hello"), 0o644))
	s := connect(t, sock)
	c := s.clients[0]
	init, err := c.Init(fst.GuestInitFlags | fuse.CAP_DIRECT_IO_ALLOW_MMAP)
	require.NoError(t, err)
	require.NotZero(t, init.Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP, "--allow-mmap offered to the guest")

	e, got := lookupAndRead(t, c, fuse.FUSE_ROOT_ID, "greeting")
	require.Equal(t, "hello", got)

	_, errno, err := c.Open(e.NodeId, syscall.O_RDWR)
	require.NoError(t, err)
	require.Equal(t, syscall.EROFS, errno)
	r, err := c.Call(fst.OpCreate, fuse.FUSE_ROOT_ID, fst.InBody(&fuse.CreateIn{Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: 0o644}),
		fst.Cstr("new"), int(unsafe.Sizeof(fuse.CreateOut{})))
	require.NoError(t, err)
	require.Equal(t, syscall.EROFS, r.Errno)

	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "the guest created a file on a read-only share")
	s.f.Close()
	require.NoError(t, wait())
}

// TestServeSocketGroup checks that --socket-group gives the socket that
// group and lets it connect (mode 0660), as Rust virtiofsd does.
func TestServeSocketGroup(t *testing.T) {
	testutil.RequiresRoot(t) // chown to another group
	group, gid := "4242", 4242
	if g, err := user.LookupGroupId("1"); err == nil {
		group, gid = g.Name, 1
	}
	_, sock, wait := serveParsed(t, "--socket-group="+group)
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 10*time.Millisecond)
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(sock, &st))
	require.Equal(t, uint32(gid), st.Gid, "group %s", group)
	require.Equal(t, uint32(0o660), st.Mode&0o777)
	s := connect(t, sock)
	s.f.Close()
	require.NoError(t, wait())

	t.Run("unknown group", func(t *testing.T) {
		sockDir := t.TempDir()
		o, err := virtiofsd.Parse([]string{"--shared-dir=" + t.TempDir(), "--socket-path=" + filepath.Join(sockDir, "s"),
			"--sandbox=none", "--socket-group=no-such-group-ksg"})
		require.NoError(t, err)
		require.ErrorContains(t, Serve(context.Background(), o), "--socket-group no-such-group-ksg")
		ents, err := os.ReadDir(sockDir)
		require.NoError(t, err)
		require.Empty(t, ents)
	})
}

func TestPlanNofile(t *testing.T) {
	n := func(v uint64) *uint64 { return &v }
	lim := func(cur, max uint64) syscall.Rlimit { return syscall.Rlimit{Cur: cur, Max: max} }
	for _, tc := range []struct {
		name      string
		requested *uint64
		cur       syscall.Rlimit
		nrOpen    uint64
		want      nofilePlan
		err       string
	}{
		{"given: both limits", n(4096), lim(1024, 524288), 1048576, nofilePlan{set: true, want: lim(4096, 4096), explicit: true}, ""},
		{"given 0: unchanged", n(0), lim(1024, 4096), 1048576, nofilePlan{}, ""},
		{"given above nr_open", n(2000000), lim(1024, 4096), 1048576, nofilePlan{}, "--rlimit-nofile=2000000 is above fs.nr_open (1048576)"},
		{"given, nr_open unknown", n(2000000), lim(1024, 4096), 0, nofilePlan{set: true, want: lim(2000000, 2000000), explicit: true}, ""},
		{"default: raise to a million", nil, lim(1024, 524288), 1048576, nofilePlan{set: true, want: lim(1000000, 1000000)}, ""},
		{"default: capped by nr_open", nil, lim(1024, 4096), 65536, nofilePlan{set: true, want: lim(65536, 65536)}, ""},
		{"default: hard limit kept when higher", nil, lim(1024, 1048576), 1048576, nofilePlan{set: true, want: lim(1000000, 1048576)}, ""},
		{"default: high enough already", nil, lim(1048576, 1048576), 1048576, nofilePlan{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planNofile(tc.requested, tc.cur, tc.nrOpen)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestRlimitNofileInChild sets RLIMIT_NOFILE in a process of its own (a
// lowered hard limit cannot be raised again without CAP_SYS_RESOURCE) and
// reads it back from /proc.
func TestRlimitNofileInChild(t *testing.T) {
	if os.Getenv("KSG_TEST_RLIMIT") != "" {
		v, _ := strconv.ParseUint(os.Getenv("KSG_TEST_RLIMIT"), 10, 64)
		if err := setRlimitNofile(context.Background(), &v); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		var lim syscall.Rlimit
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		os.Stdout.WriteString(strconv.FormatUint(lim.Cur, 10) + " " + strconv.FormatUint(lim.Max, 10))
		os.Exit(0)
	}
	run := func(v uint64) (string, int) {
		cmd := execSelf(t, "TestRlimitNofileInChild", "KSG_TEST_RLIMIT="+strconv.FormatUint(v, 10))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), cmd.ProcessState.ExitCode()
		}
		return string(out), 0
	}
	out, code := run(1000)
	require.Zero(t, code, out)
	require.Equal(t, "1000 1000", out)

	var cur syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur))
	if !hasCapability(t, capSysResource) && cur.Max < readNrOpen() {
		out, code = run(cur.Max + 1)
		require.Equal(t, 3, code, out)
		require.Contains(t, out, "needs CAP_SYS_RESOURCE, which this process lacks")
	} else {
		t.Log("this process may raise its hard limit: the CAP_SYS_RESOURCE error cannot happen here")
	}
}
