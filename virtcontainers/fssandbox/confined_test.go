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

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// report is testdata/confined's Report.
type report struct {
	Error            string              `json:"error"`
	ProcWrite        map[string]string   `json:"proc_write"`
	Threads          []map[string]string `json:"threads"`
	RootMountOptions string              `json:"root_mount_options"`
	DeviceOpen       string              `json:"device_open"`
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
	cmd := exec.Command(confinedHelper(t), string(mode), t.TempDir())
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
// setting, every thread has no_new_privs and only the kept capabilities, and in the namespace sandbox the share is nosuid and
// nodev, so a device node the guest makes does not open.
func TestConfinedChild(t *testing.T) {
	testutil.RequiresRoot(t)
	kept := fmt.Sprintf("%016x", KeptMask())
	for _, mode := range []Mode{ModeNamespace, ModeChroot} {
		t.Run(string(mode), func(t *testing.T) {
			r, stderr, err := runConfined(t, mode)
			require.NoError(t, err, "stderr: %s", stderr)
			require.Empty(t, r.Error)
			for path, errno := range r.ProcWrite {
				require.NotEmpty(t, errno, "%s opened for writing through the proc descriptor", path)
			}
			require.Equal(t, "ENOENT", r.ProcWrite["../../sys/kernel/core_pattern"], "procfs shows only processes (subset=pid)")
			require.Equal(t, "EROFS", r.ProcWrite["../oom_score_adj"], "procfs is read-only")
			require.NotEmpty(t, r.Threads)
			for i, th := range r.Threads {
				require.Equal(t, "1", th["NoNewPrivs"], "thread %d", i)
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
