package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/standin-shim/standin"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// ctrStartFailure is how ctr reports a shim whose start failed with line.
func ctrStartFailure(line string) string {
	return "ctr: failed to start shim: start failed: " + line + ": exit status 1: unknown\n"
}

// criStartFailure is the message crictl's fatal log line carries when
// RunPodSandbox failed because the shim's start failed with line.
func criStartFailure(line string) string {
	return "run pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to start shim: start failed: " +
		line + ": exit status 1: unknown"
}

// crictlFatal returns the message of crictl's level=fatal line, unquoted.
func crictlFatal(t testing.TB, stderr string) string {
	t.Helper()
	re := regexp.MustCompile(`level=fatal msg=("(?:[^"\\]|\\.)*")`)
	m := re.FindStringSubmatch(stderr)
	require.NotNil(t, m, "no fatal line in crictl output:\n%s", stderr)
	var msg string
	_, err := fmt.Sscanf(m[1], "%q", &msg)
	require.NoError(t, err)
	return msg
}

// refusedSandboxIDs returns the ids our shim logged refusals for, in order:
// the one place a refused CRI sandbox's id is visible.
func (c *containerd) refusedSandboxIDs() []string {
	var ids []string
	re := regexp.MustCompile(`msg="sandbox creation refused[^"]*".* sandbox=([^ ]+) source=containerd-kata-shim-v2`)
	sc := bufio.NewScanner(strings.NewReader(c.log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// requireNothingLeft checks that a refused or failed start of id left no
// container, task, bundle, shim socket, plan, or delegate start behind.
func (c *containerd) requireNothingLeft(t testing.TB, ns, id, stateDir string) {
	t.Helper()
	for _, what := range []string{"containers", "tasks"} {
		out, stderr, err := c.ctr(ns, what, "list", "--quiet")
		require.NoError(t, err, stderr)
		require.NotContains(t, strings.Fields(out), id, "%s left behind", what)
	}
	require.NoFileExists(t, c.shimSocket(ns, id), "shim socket left behind")
	require.NoDirExists(t, filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", ns, id), "bundle left behind")
	require.NotContains(t, plans(t, stateDir), id, "plan left behind")
	require.NoFileExists(t, standin.StartRecordPath(c.recordDir, id), "the delegate was started")
}

// eventually polls cond for up to 10 s: containerd runs a shim's delete
// asynchronously after the shim disconnects.
func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchEvents runs `ctr events` until the test ends and collects its output.
func (c *containerd) watchEvents(t testing.TB) *testutil.SyncBuffer {
	t.Helper()
	ev := &testutil.SyncBuffer{}
	cmd := exec.Command("ctr", "--address", c.address, "events")
	cmd.Stdout, cmd.Stderr = ev, ev
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// ctr subscribes asynchronously; a containerd event it must see proves
	// the subscription is live. An event published before the subscription
	// is lost, so each attempt publishes a new one.
	probe := fmt.Sprintf("ksg-probe-%d-", os.Getpid())
	attempt := 0
	eventually(t, func() bool {
		if strings.Contains(ev.String(), probe) {
			return true
		}
		attempt++
		name := probe + strconv.Itoa(attempt)
		_, stderr, err := c.ctr(ctrNamespace, "namespaces", "create", name)
		require.NoError(t, err, stderr)
		_, _, _ = c.ctr(ctrNamespace, "namespaces", "remove", name)
		return false
	}, "ctr events never showed a probe:\n%s", ev)
	return ev
}

// ourProcesses lists running processes whose executable is our shim.
func ourProcesses(t testing.TB) []int {
	t.Helper()
	var pids []int
	for _, pid := range processesMentioning("") {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && exe == suite.bins.ours {
			pids = append(pids, pid)
		}
	}
	return pids
}
