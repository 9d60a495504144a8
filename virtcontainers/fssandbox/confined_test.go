package fssandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// report is testdata/confined's Report.
type report struct {
	Error            string              `json:"error"`
	ProcWrite        map[string]string   `json:"proc_write"`
	Threads          []map[string]string `json:"threads"`
	RootMountOptions string              `json:"root_mount_options"`
	DeviceOpen       string              `json:"device_open"`
	Forbidden        string              `json:"forbidden"`
	UnshareFS        string              `json:"unshare_fs"`
}

var (
	confinedOnce sync.Once
	confinedBin  string
	confinedErr  error
)

// confinedHelper builds testdata/confined with CGO_ENABLED=0 (the sandbox
// drops capabilities in all threads, which Go does only without cgo).
func confinedHelper(t *testing.T) string {
	t.Helper()
	confinedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "confined")
		if err != nil {
			confinedErr = err
			return
		}
		confinedBin = filepath.Join(dir, "confined")
		cmd := exec.Command("go", "build", "-o", confinedBin, "./testdata/confined")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			confinedErr = fmt.Errorf("build confined: %v: %s", err, out)
		}
	})
	require.NoError(t, confinedErr)
	return confinedBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if confinedBin != "" {
		os.RemoveAll(filepath.Dir(confinedBin))
	}
	os.Exit(code)
}

// runConfined runs the helper's sandbox child in mode on a fresh share and
// returns its report, its stderr and its exit error.
func runConfined(t *testing.T, mode Mode, env ...string) (report, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	share := t.TempDir()
	// A guest's plant: after the root change this is the sandbox's
	// /proc/sys/kernel/cap_last_cap, which must not decide what is dropped.
	require.NoError(t, os.MkdirAll(filepath.Join(share, "proc", "sys", "kernel"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(share, "proc", "sys", "kernel", "cap_last_cap"), []byte("0\n"), 0o644))
	cmd := exec.Command(confinedHelper(t), string(mode), share)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r report
	if stdout.Len() > 0 {
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &r), "child's report: %s", stdout.String())
	}
	return r, stderr.String(), err
}

// TestConfinedChild checks, from inside the sandbox child, what a daemon
// bug could still reach: the proc descriptor leads to no writable kernel
// setting, every thread has no_new_privs, the seccomp filter and only the
// kept capabilities, and in the namespace sandbox the share is nosuid and
// nodev, so a device node the guest makes does not open.
func TestConfinedChild(t *testing.T) {
	testutil.RequiresRoot(t)
	kept := fmt.Sprintf("%016x", KeptMask())
	for _, mode := range []Mode{ModeNamespace, ModeChroot} {
		t.Run(string(mode), func(t *testing.T) {
			r, stderr, err := runConfined(t, mode, "KSG_TEST_SECCOMP=kill")
			require.NoError(t, err, "stderr: %s", stderr)
			require.Empty(t, r.Error)
			for path, errno := range r.ProcWrite {
				require.NotEmpty(t, errno, "%s opened for writing through the proc descriptor", path)
			}
			require.Empty(t, r.UnshareFS, "unshare(CLONE_FS) under the filter")
			require.Equal(t, "ENOENT", r.ProcWrite["../../sys/kernel/core_pattern"], "procfs shows only processes (subset=pid)")
			require.Equal(t, "EROFS", r.ProcWrite["../oom_score_adj"], "procfs is read-only")
			require.NotEmpty(t, r.Threads)
			for i, th := range r.Threads {
				require.Equal(t, "1", th["NoNewPrivs"], "thread %d", i)
				require.Equal(t, "2", th["Seccomp"], "thread %d: filter mode", i)
				require.Equal(t, kept, th["CapEff"], "thread %d", i)
				require.Equal(t, kept, th["CapBnd"], "thread %d", i)
			}
			if mode == ModeNamespace {
				require.Contains(t, r.RootMountOptions, "nosuid")
				require.Contains(t, r.RootMountOptions, "nodev")
				require.Equal(t, "EACCES", r.DeviceOpen, "a device node in the share opened")
			}
		})
	}
}

// TestSeccompActions: a call outside the allow-list (acct, which fails with
// EPERM if it runs) kills the child, is logged and runs, or traps, as
// virtiofsd's --seccomp says; none installs no filter. unshare with a
// namespace flag is outside it too.
func TestSeccompActions(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, tc := range []struct {
		action    SeccompAction
		call      string
		exit      string // the helper's exit error: the child's is in stderr
		stderr    string
		forbidden string
		seccomp   string
	}{
		{SeccompKill, "acct", "exit status 3", "child: signal: bad system call", "", ""},
		{SeccompKill, "unshare-user", "exit status 3", "child: signal: bad system call", "", ""},
		{SeccompTrap, "acct", "exit status 3", "SIGSYS", "", ""},
		{SeccompLog, "acct", "", "", "EPERM", "2"},
		{SeccompNone, "acct", "", "", "EPERM", "0"},
	} {
		t.Run(string(tc.action)+"/"+tc.call, func(t *testing.T) {
			r, stderr, err := runConfined(t, ModeNamespace, "KSG_TEST_SECCOMP="+string(tc.action), "KSG_TEST_FORBIDDEN="+tc.call)
			if tc.exit != "" {
				require.EqualError(t, err, tc.exit)
				require.Contains(t, stderr, tc.stderr)
				require.Empty(t, r.Forbidden, "the forbidden call returned")
				return
			}
			require.NoError(t, err, "stderr: %s", stderr)
			require.Equal(t, tc.forbidden, r.Forbidden)
			for _, th := range r.Threads {
				require.Equal(t, tc.seccomp, th["Seccomp"])
			}
		})
	}
}

func TestParseSeccompAction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SeccompAction
	}{
		{"", SeccompKill}, {"kill", SeccompKill}, {"log", SeccompLog}, {"trap", SeccompTrap}, {"none", SeccompNone},
	} {
		a, err := ParseSeccompAction(tc.in)
		require.NoError(t, err)
		require.Equal(t, tc.want, a)
	}
	_, err := ParseSeccompAction("allow")
	require.ErrorContains(t, err, `seccomp action "allow": want kill, log, trap or none`)
}

// TestSeccompFilterShape: the program starts with the architecture check
// and every allowed call's jump lands on the allow.
func TestSeccompFilterShape(t *testing.T) {
	allowed := allowedSyscalls()
	p, err := buildFilter(auditArch, allowed, unix.SECCOMP_RET_KILL_PROCESS)
	require.NoError(t, err)
	require.Equal(t, uint32(offArch), p[0].K)
	require.EqualValues(t, auditArch, p[1].K)
	last := len(p) - 1
	require.EqualValues(t, unix.SECCOMP_RET_ALLOW, p[last].K)
	require.EqualValues(t, unix.SECCOMP_RET_KILL_PROCESS, p[last-1].K)
	first := last - 1 - len(allowed)
	for i, nr := range allowed {
		ins := p[first+i]
		require.EqualValues(t, nr, ins.K)
		require.Equal(t, last, first+i+1+int(ins.Jt), "call %d jumps to the allow", nr)
	}
	seen := map[uintptr]bool{}
	for _, nr := range allowed {
		require.False(t, seen[nr], "call %d listed twice", nr)
		seen[nr] = true
		require.NotContains(t, []uintptr{unix.SYS_PTRACE, unix.SYS_MOUNT, unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_EXECVE,
			unix.SYS_SOCKET, unix.SYS_CONNECT, unix.SYS_PRCTL, unix.SYS_SETUID, unix.SYS_CAPSET, unix.SYS_KEXEC_LOAD,
			unix.SYS_INIT_MODULE, unix.SYS_BPF, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT, unix.SYS_SETNS}, nr)
	}
}
