package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// The test binary doubles as kata-virtiofsd: a real exec replaces the
// process, so the launcher must run in a process of its own.
const runAsKataVirtiofsd = "KSG_TEST_RUN_KATA_VIRTIOFSD"

// defaultUpstreamEnv replaces defaultUpstreamVirtiofsd in that
// process, so that tests do not depend on what this host has installed.
const defaultUpstreamEnv = "KSG_TEST_DEFAULT_UPSTREAM"

// TestDefaultUpstreamIsConfigs: without a plan, kata-virtiofsd looks for the
// upstream virtiofsd where [submount_guard]'s default upstream_virtiofsd
// points.
func TestDefaultUpstreamIsConfigs(t *testing.T) {
	require.Equal(t, config.DefaultUpstreamVirtiofsd, defaultUpstreamVirtiofsd)
}

func TestMain(m *testing.M) {
	if os.Getenv(runAsKataVirtiofsd) == "1" {
		defaultUpstream := defaultUpstreamVirtiofsd
		if v, ok := os.LookupEnv(defaultUpstreamEnv); ok {
			defaultUpstream = v
		}
		l := launcher{readPlan: plan.Read, defaultUpstream: defaultUpstream, serve: serve, stdout: os.Stdout, stderr: os.Stderr,
			revision: "test", syslogAddr: os.Getenv("KSG_TEST_SYSLOG_ADDR")}
		if err := l.run(context.Background(), os.Args[1:]); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const cDaemonPath = "/usr/lib/qemu/virtiofsd"

func rustDaemon(t testing.TB) string {
	t.Helper()
	return testutil.RequiresCacheFile(t, "bin/virtiofsd-rust")
}

func cDaemon(t testing.TB) string {
	t.Helper()
	_, err := os.Stat(cDaemonPath)
	testutil.Require(t, err == nil, cDaemonPath+" missing (qemu-system-common, test/setup/10-apt.sh)")
	return cDaemonPath
}

// kataShare makes a shared dir laid out as Kata's and an empty state dir.
func kataShare(t testing.TB, id string) (shared, stateDir string) {
	t.Helper()
	root := t.TempDir()
	shared = filepath.Join(root, "shared", "sandboxes", id, "shared")
	require.NoError(t, os.MkdirAll(shared, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(shared, "hello"), []byte("hi\n"), 0o644))
	return shared, filepath.Join(root, "state")
}

func writePlan(t testing.TB, stateDir, id string, p protection.Protection, upstream string) {
	t.Helper()
	require.NoError(t, plan.Write(stateDir, &plan.Plan{
		SandboxID: id, Action: plan.Warn, Reason: "test", Protection: p, UpstreamVirtiofsd: upstream,
		Created: time.Now().UTC(),
	}))
}

// kataArgs is what Kata 3.x passes with the default virtio_fs_extra_args.
func kataArgs(shared string, extra ...string) []string {
	return append([]string{"--cache=auto", "--shared-dir=" + shared, "--fd=3", "--thread-pool-size=1", "--announce-submounts"}, extra...)
}

// listener returns a listening unix socket as a file, as Kata hands it over.
func listener(t testing.TB) (path string, f *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "vhost-fs.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	f, err = l.File()
	require.NoError(t, err)
	require.NoError(t, l.Close())
	t.Cleanup(func() { f.Close() })
	return path, f
}

// start runs the test binary as kata-virtiofsd with fd (if any) as fd 3.
func start(t testing.TB, args []string, fd *os.File, env ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	return startWith(t, nil, args, fd, env...)
}

// withSyslog runs the command with a syslog daemon of the test's own at its
// /dev/log, whatever the host has, and sets *sl to it.
func withSyslog(t testing.TB, sl **testutil.Syslog) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) { *sl = testutil.PrivateSyslog(t, cmd) }
}

// withoutSyslog runs the command as on a host without a syslog daemon.
func withoutSyslog(t testing.TB) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) { testutil.NoSyslog(t, cmd) }
}

// startWith is start with the command first given to wrap (if not nil),
// which sets its /dev/log (withSyslog, withoutSyslog).
func startWith(t testing.TB, wrap func(*exec.Cmd), args []string, fd *os.File, env ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runAsKataVirtiofsd+"=1"), env...)
	if fd != nil {
		cmd.ExtraFiles = []*os.File{fd}
	}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if wrap != nil {
		wrap(cmd)
	}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, out
}

// runToFailure runs kata-virtiofsd and wants it to fail; it returns its output.
func runToFailure(t *testing.T, args []string, fd *os.File, env ...string) string {
	t.Helper()
	cmd, out := start(t, args, fd, env...)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "kata-virtiofsd should have failed; output:\n%s", out.String())
		require.Equal(t, 1, ee.ExitCode())
	case <-time.After(30 * time.Second):
		t.Fatalf("kata-virtiofsd still running; output:\n%s", out.String())
	}
	return out.String()
}

// getFeatures connects to a vhost-user backend and asks for its features.
func getFeatures(t testing.TB, path string) uint64 {
	t.Helper()
	return getFeaturesThen(t, path, func() {})
}

// getFeaturesThen is getFeatures calling connected before it hangs up: the C
// daemon exits as soon as its front-end leaves.
func getFeaturesThen(t testing.TB, path string, connected func()) uint64 {
	t.Helper()
	conn, err := net.DialTimeout("unix", path, 10*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	const getFeatures, version1, replyFlag = 1, 0x1, 0x4
	msg := make([]byte, 12)
	binary.LittleEndian.PutUint32(msg[0:], getFeatures)
	binary.LittleEndian.PutUint32(msg[4:], version1)
	_, err = conn.Write(msg)
	require.NoError(t, err)
	reply := make([]byte, 20)
	_, err = io.ReadFull(conn, reply)
	require.NoError(t, err, "reading VHOST_USER_GET_FEATURES reply")
	require.Equal(t, uint32(getFeatures), binary.LittleEndian.Uint32(reply[0:]))
	require.NotZero(t, binary.LittleEndian.Uint32(reply[4:])&replyFlag, "reply flag")
	require.Equal(t, uint32(8), binary.LittleEndian.Uint32(reply[8:]))
	connected()
	return binary.LittleEndian.Uint64(reply[12:])
}

func cmdline(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// TestRealStart starts each upstream daemon through kata-virtiofsd the way
// Kata does, with the listening socket as fd 3, and checks that the daemon
// answers a vhost-user front-end in the same process with the protection's
// arguments.
func TestRealStart(t *testing.T) {
	testutil.RequiresRoot(t)
	type daemon struct {
		name string
		path func(testing.TB) string
	}
	daemons := []daemon{{"rust", rustDaemon}, {"qemu-c", cDaemon}}
	cases := []struct {
		protection protection.Protection
		viaFlag    bool
		announce   bool
	}{
		{protection.None, false, true},
		{protection.NoSubmounts, false, false},
		{protection.NoSubmounts, true, false},
	}
	for _, dm := range daemons {
		for _, tc := range cases {
			via := "plan"
			if tc.viaFlag {
				via = "flag"
			}
			t.Run(fmt.Sprintf("%s/%s/%s", dm.name, tc.protection, via), func(t *testing.T) {
				upstream := dm.path(t)
				id := "sb-" + dm.name
				shared, stateDir := kataShare(t, id)
				args := kataArgs(shared, "--guard-state-dir="+stateDir)
				if tc.viaFlag {
					writePlan(t, stateDir, id, protection.None, "/nonexistent/virtiofsd")
					args = append(args, "--guard-protection="+string(tc.protection), "--guard-upstream="+upstream)
				} else {
					writePlan(t, stateDir, id, tc.protection, upstream)
				}
				sock, fd := listener(t)
				cmd, out := start(t, args, fd)
				fd.Close()

				// Same pid, now the upstream daemon with the translated
				// arguments, read while the front-end is still there.
				var argv []string
				features := getFeaturesThen(t, sock, func() { argv = cmdline(t, cmd.Process.Pid) })
				require.NotZero(t, features&(1<<32), "VIRTIO_F_VERSION_1 in %#x; output:\n%s", features, out.String())
				joined := strings.Join(argv, " ")
				require.NotContains(t, joined, "--guard-", "our options never reach the upstream")
				require.Contains(t, joined, "--fd=3")
				switch dm.name {
				case "rust":
					require.Contains(t, joined, "--shared-dir="+shared)
					require.Equal(t, tc.announce, strings.Contains(joined, "--announce-submounts"), joined)
					require.Equal(t, !tc.announce, strings.Contains(joined, "--no-announce-submounts"), joined)
				case "qemu-c":
					require.Contains(t, joined, "-o source="+shared)
					require.Equal(t, tc.announce, strings.Contains(joined, "-o announce_submounts"), joined)
					require.NotContains(t, joined, "--shared-dir")
				}

				log := out.String()
				require.Contains(t, log, `msg="starting upstream virtiofsd"`)
				require.Contains(t, log, "sandbox="+id)
				require.Contains(t, log, "protection="+string(tc.protection))
				require.Equal(t, 1, strings.Count(log, "starting upstream virtiofsd"), "decision logged once")
			})
		}
	}
}

// TestNoPlanRunsAsKata: a sandbox without a plan gets the share exactly as
// Kata configured it: [submount_guard]'s default upstream_virtiofsd (here
// QEMU's C daemon stands at that path) with Kata's arguments, submounts
// announced; only where no upstream is installed does kata-virtiofsd serve
// the share itself.
func TestNoPlanRunsAsKata(t *testing.T) {
	testutil.RequiresRoot(t)
	c := cDaemon(t)
	id := "sb-no-plan"
	shared, stateDir := kataShare(t, id)

	t.Run("default upstream installed", func(t *testing.T) {
		sock, fd := listener(t)
		cmd, out := start(t, kataArgs(shared, "--guard-state-dir="+stateDir), fd, defaultUpstreamEnv+"="+c)
		fd.Close()
		var joined string
		require.NoError(t, vhostExchange(sock, func() { joined = strings.Join(cmdline(t, cmd.Process.Pid), " ") }), "output:\n%s", out)
		require.True(t, strings.HasPrefix(joined, c+" "), joined)
		require.Contains(t, joined, "-o source="+shared)
		require.Contains(t, joined, "-o announce_submounts", "submounts announced, as Kata asked")
		log := out.String()
		require.Contains(t, log, "level=warning")
		require.Contains(t, log, `msg="starting upstream virtiofsd"`)
		require.Contains(t, log, `upstream_from="default upstream_virtiofsd"`)
		require.Contains(t, log, "no_plan=")
		require.NotContains(t, log, "serving the share")
	})

	t.Run("no upstream installed", func(t *testing.T) {
		sock, fd := listener(t)
		// The test binary has cgo: no sandbox for our daemon.
		_, out := start(t, kataArgs(shared, "--guard-state-dir="+stateDir, "--sandbox=none"), fd, defaultUpstreamEnv+"="+filepath.Join(t.TempDir(), "virtiofsd"))
		fd.Close()
		getFeatures(t, sock)
		require.Eventually(t, func() bool { return strings.Contains(out.String(), "frontend connected; serving") }, 10*time.Second, 10*time.Millisecond)
		require.Contains(t, out.String(), `msg="serving the share with kata-virtiofsd's own daemon"`)
	})
}

// vhostExchange connects to a vhost-user backend, asks for its features and
// its protocol features (each answer comes after the backend has logged
// the connection), calls connected, if any, and hangs up.
func vhostExchange(path string, connected ...func()) error {
	conn, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return err
	}
	const getFeatures, getProtocolFeatures, version1 = 1, 15, 0x1
	for _, req := range []uint32{getFeatures, getProtocolFeatures} {
		msg := make([]byte, 12)
		binary.LittleEndian.PutUint32(msg[0:], req)
		binary.LittleEndian.PutUint32(msg[4:], version1)
		if _, err := conn.Write(msg); err != nil {
			return fmt.Errorf("request %d: %w", req, err)
		}
		reply := make([]byte, 20)
		if _, err := io.ReadFull(conn, reply); err != nil {
			return fmt.Errorf("reply to request %d: %w", req, err)
		}
		if got := binary.LittleEndian.Uint32(reply[0:]); got != req {
			return fmt.Errorf("reply to request %d is for request %d", req, got)
		}
	}
	for _, f := range connected {
		f()
	}
	return nil
}

// waitExit waits for cmd and returns its exit code, -1 if a signal ended it.
func waitExit(t *testing.T, cmd *exec.Cmd, out fmt.Stringer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after the front-end hung up; output:\n%s", cmd.Path, out)
	}
	return cmd.ProcessState.ExitCode()
}

// TestCDaemonWithKataSyslog starts QEMU's C virtiofsd through kata-virtiofsd
// with Kata's exact argv, --syslog included, and checks that the daemon
// survives a front-end's connection, on a host without a syslog daemon and
// on one with (each made for the test, whatever this host has). Without,
// kata-virtiofsd must have left --syslog out and said so on stderr; with,
// it passes --syslog and both its lines and the C daemon's reach syslog.
// The controls show the C daemon given --syslog dying without one.
func TestCDaemonWithKataSyslog(t *testing.T) {
	testutil.RequiresRoot(t)
	c := cDaemon(t)
	id := "sb-c-syslog"
	shared, stateDir := kataShare(t, id)
	writePlan(t, stateDir, id, protection.None, c)
	kata := append([]string{"--syslog"}, kataArgs(shared)...)

	for _, hostSyslog := range []bool{false, true} {
		name := "no syslog daemon"
		if hostSyslog {
			name = "a syslog daemon"
		}
		t.Run(name+": through kata-virtiofsd", func(t *testing.T) {
			var sl *testutil.Syslog
			wrap := withoutSyslog(t)
			if hostSyslog {
				wrap = withSyslog(t, &sl)
			}
			sock, fd := listener(t)
			cmd, out := startWith(t, wrap, append(kata, "--guard-state-dir="+stateDir), fd)
			fd.Close()
			var joined string
			require.NoError(t, vhostExchange(sock, func() { joined = strings.Join(cmdline(t, cmd.Process.Pid), " ") }),
				"C virtiofsd did not answer; output:\n%s", out)
			require.Contains(t, joined, "-o source="+shared, "the C daemon runs")
			require.Zero(t, waitExit(t, cmd, out), "C virtiofsd did not exit cleanly when the front-end left; output:\n%s", out)
			log := out.String()
			if hostSyslog {
				require.Contains(t, joined, "--syslog")
				require.NotContains(t, log, "no syslog daemon answers")
				_, err := sl.WaitFor("starting upstream virtiofsd", 10*time.Second)
				require.NoError(t, err)
				// The C daemon's own messages, under its own tag.
				_, err = sl.WaitFor("Received vhost-user socket connection", 10*time.Second)
				require.NoError(t, err)
				require.NotContains(t, log, "Received vhost-user socket connection", "with --syslog, not on stderr")
				return
			}
			require.NotContains(t, joined, "--syslog")
			require.Contains(t, log, "level=warning")
			require.Contains(t, log, `msg="no syslog daemon answers at /dev/log: --syslog is not passed to QEMU's C virtiofsd`)
			require.Equal(t, 1, strings.Count(log, "no syslog daemon answers"), "warned once:\n%s", log)
			// The C daemon's own messages now reach stderr, which Kata reads.
			require.Contains(t, log, "Received vhost-user socket connection")
		})

		t.Run(name+": control: the C daemon given --syslog", func(t *testing.T) {
			o, err := virtiofsd.Parse(kata)
			require.NoError(t, err)
			d, err := virtiofsd.Detect(context.Background(), c, "")
			require.NoError(t, err)
			args, _, err := virtiofsd.Translate(o, d, protection.None, virtiofsd.Host{Syslog: true})
			require.NoError(t, err)
			require.Contains(t, args, "--syslog")
			sock, fd := listener(t)
			cmd := exec.Command(c, args...)
			cmd.ExtraFiles = []*os.File{fd}
			out := &testutil.SyncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			var sl *testutil.Syslog
			if hostSyslog {
				sl = testutil.PrivateSyslog(t, cmd)
			} else {
				testutil.NoSyslog(t, cmd)
			}
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			fd.Close()
			err = vhostExchange(sock)
			code := waitExit(t, cmd, out)
			if hostSyslog {
				require.NoError(t, err, "output:\n%s", out)
				require.Zero(t, code, "output:\n%s", out)
				_, err = sl.WaitFor("Received vhost-user socket connection", 10*time.Second)
				require.NoError(t, err)
				return
			}
			// Its confined child is killed by SIGSYS at the first message after
			// the connection; the parent exits 1.
			require.Error(t, err, "the C daemon answered with --syslog and no /dev/log; output:\n%s", out)
			require.Equal(t, 1, code, "output:\n%s", out)
		})
	}
}

// TestSyslog checks that with Kata's --syslog the decision goes to syslog
// under Kata's tag, and a failure also to stderr.
func TestSyslog(t *testing.T) {
	testutil.RequiresRoot(t)
	// The Rust daemon: on a host without /dev/log, as this test host may be,
	// the C daemon would not get --syslog (TestCDaemonWithKataSyslog).
	upstream := rustDaemon(t)
	id := "sb-syslog"
	shared, stateDir := kataShare(t, id)
	writePlan(t, stateDir, id, protection.NoSubmounts, upstream)

	addr := filepath.Join(t.TempDir(), "log")
	logConn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { logConn.Close() })

	sock, fd := listener(t)
	args := append([]string{"--syslog"}, kataArgs(shared, "--guard-state-dir="+stateDir)...)
	_, out := start(t, args, fd, "KSG_TEST_SYSLOG_ADDR="+addr)
	fd.Close()
	getFeatures(t, sock)

	require.NoError(t, logConn.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 64<<10)
	n, err := logConn.Read(buf)
	require.NoError(t, err)
	line := string(buf[:n])
	require.Contains(t, line, " kata[")
	require.Contains(t, line, "starting upstream virtiofsd")
	require.Contains(t, line, "sandbox="+id)
	require.Contains(t, line, "protection=no-submounts")
	require.NotContains(t, out.String(), "starting upstream virtiofsd", "with --syslog the decision goes to syslog only")

	// A failure reaches both.
	out2 := runToFailure(t, append([]string{"--syslog"}, kataArgs(shared, "--guard-state-dir="+stateDir, "--bogus")...), nil,
		"KSG_TEST_SYSLOG_ADDR="+addr)
	require.Contains(t, out2, `kata-virtiofsd: invalid argument "--bogus"`)
	require.NoError(t, logConn.SetReadDeadline(time.Now().Add(10*time.Second)))
	n, err = logConn.Read(buf)
	require.NoError(t, err)
	require.Contains(t, string(buf[:n]), "level=error")
	require.Contains(t, string(buf[:n]), "--bogus")
}

// TestErrors runs kata-virtiofsd into each refusal and checks that it fails
// with one message naming the cause.
func TestErrors(t *testing.T) {
	c := cDaemon(t)
	cases := []struct {
		name  string
		setup func(t *testing.T, stateDir, id string)
		extra []string
		env   []string
		want  []string
	}{
		{
			name: "missing upstream",
			setup: func(t *testing.T, stateDir, id string) {
				writePlan(t, stateDir, id, protection.NoSubmounts, "/opt/kata/libexec/no-such-virtiofsd")
			},
			want: []string{"upstream virtiofsd /opt/kata/libexec/no-such-virtiofsd does not exist", "upstream from plan"},
		},
		{
			name:  "missing upstream from flag",
			extra: []string{"--guard-upstream=/nonexistent/virtiofsd"},
			want:  []string{"upstream virtiofsd /nonexistent/virtiofsd does not exist", "upstream from --guard-upstream"},
		},
		{
			name:  "bad flag",
			extra: []string{"--no-such-flag"},
			want:  []string{`invalid argument \"--no-such-flag\"`},
		},
		{
			name:  "bad protection",
			extra: []string{"--guard-protection=maybe"},
			want:  []string{"--guard-protection must be one of recover, no-submounts, none"},
		},
		{
			name: "plan for another sandbox",
			setup: func(t *testing.T, stateDir, id string) {
				writePlan(t, stateDir, "other-sandbox", protection.None, c)
				require.NoError(t, os.Rename(statedir.PlanPath(stateDir, "other-sandbox"), statedir.PlanPath(stateDir, id)))
			},
			want: []string{`it is the plan of sandbox \"other-sandbox\"`},
		},
		{
			name: "unreadable plan",
			setup: func(t *testing.T, stateDir, id string) {
				require.NoError(t, os.MkdirAll(stateDir, 0o700))
				require.NoError(t, os.WriteFile(statedir.PlanPath(stateDir, id), []byte(`{"sandbox_id": "x", `), 0o600))
			},
			want: []string{"reading the plan of sandbox", "fix or remove the file"},
		},
		{
			name: "plan is a directory",
			setup: func(t *testing.T, stateDir, id string) {
				require.NoError(t, os.MkdirAll(statedir.PlanPath(stateDir, id), 0o700))
			},
			want: []string{"reading the plan of sandbox", "is a directory"},
		},
		{
			name: "plan refuses the sandbox",
			setup: func(t *testing.T, stateDir, id string) {
				require.NoError(t, plan.Write(stateDir, &plan.Plan{SandboxID: id, Action: plan.Refuse,
					Reason: "guest kernel 5.10.200 lacks the fix", Protection: protection.None, UpstreamVirtiofsd: c}))
			},
			want: []string{"refuses sandbox", "guest kernel 5.10.200 lacks the fix"},
		},
		{
			name:  "no plan and --guard-no-plan=fail",
			extra: []string{"--guard-no-plan=fail", "--guard-upstream=" + c},
			want:  []string{"no plan for sandbox", "--guard-no-plan=fail"},
		},
		{
			// The test binary has cgo, so our daemon's sandbox refuses it.
			name: "no upstream at all",
			env:  []string{defaultUpstreamEnv + "=/nonexistent/libexec/virtiofsd"},
			want: []string{"no upstream virtiofsd is configured (no --guard-upstream, no plan, and [submount_guard]'s default upstream_virtiofsd " +
				"/nonexistent/libexec/virtiofsd does not exist), so kata-virtiofsd serves the share itself", "built with cgo"},
		},
		{
			name:  "plan without an upstream",
			setup: func(t *testing.T, stateDir, id string) { writePlan(t, stateDir, id, protection.None, "") },
			env:   []string{defaultUpstreamEnv + "=" + c},
			want: []string{"no upstream virtiofsd is configured (neither --guard-upstream nor the plan's upstream_virtiofsd), " +
				"so kata-virtiofsd serves the share itself", "built with cgo"},
		},
		{
			name:  "recover before our daemon exists",
			setup: func(t *testing.T, stateDir, id string) { writePlan(t, stateDir, id, protection.Recover, c) },
			want:  []string{"protection recover (from plan) needs kata-virtiofsd's own daemon", "built with cgo"},
		},
		{
			name:  "upstream is kata-virtiofsd itself",
			extra: []string{"--guard-upstream=" + os.Args[0]},
			want:  []string{"is kata-virtiofsd itself"},
		},
		{
			name:  "C daemon cannot honour a flag",
			extra: []string{"--guard-upstream=" + c, "--readonly", "--cache=metadata"},
			want:  []string{"QEMU's C virtiofsd", "cannot honour --cache=metadata, --readonly"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := "sb-errors"
			shared, stateDir := kataShare(t, id)
			if tc.setup != nil {
				tc.setup(t, stateDir, id)
			}
			_, fd := listener(t)
			out := runToFailure(t, kataArgs(shared, append([]string{"--guard-state-dir=" + stateDir}, tc.extra...)...), fd, tc.env...)
			for _, w := range tc.want {
				require.Contains(t, out, w)
			}
			require.Contains(t, out, "level=error")
			require.Equal(t, 1, strings.Count(out, "level=error"), "one error line:\n%s", out)
		})
	}

	t.Run("fd 3 not open", func(t *testing.T) {
		shared, stateDir := kataShare(t, "sb-nofd")
		out := runToFailure(t, kataArgs(shared, "--guard-state-dir="+stateDir, "--guard-upstream="+c), nil)
		// In a Go child fd 3 may be the runtime's own (epoll), so the message is
		// "not a socket" or "no such open file descriptor".
		require.Contains(t, out, "--fd=3: ")
		require.Contains(t, out, "Kata passes its listening vhost-user socket as fd 3")
	})
}

// TestDecide covers how options and plans combine, against the real plan store.
func TestDecide(t *testing.T) {
	const id = "sb-decide"
	installed := filepath.Join(t.TempDir(), "virtiofsd")
	require.NoError(t, os.WriteFile(installed, nil, 0o755))
	notInstalled := filepath.Join(t.TempDir(), "virtiofsd")
	cases := []struct {
		name     string
		plan     *plan.Plan
		args     []string
		shared   string // default: a Kata share of id
		dflt     string // [submount_guard]'s default upstream_virtiofsd; default: not installed
		want     decision
		wantErr  error
		errMatch string
	}{
		{
			name: "plan decides",
			plan: &plan.Plan{SandboxID: id, Action: plan.Warn, Protection: protection.NoSubmounts, UpstreamVirtiofsd: "/usr/libexec/virtiofsd"},
			want: decision{protection: protection.NoSubmounts, protectionFrom: "plan", upstream: "/usr/libexec/virtiofsd", upstreamFrom: "plan"},
		},
		{
			name: "flags override the plan",
			plan: &plan.Plan{SandboxID: id, Action: plan.Warn, Protection: protection.NoSubmounts, UpstreamVirtiofsd: "/usr/libexec/virtiofsd"},
			args: []string{"--guard-protection=none", "--guard-upstream=/usr/lib/qemu/virtiofsd"},
			want: decision{protection: protection.None, protectionFrom: "--guard-protection", upstream: "/usr/lib/qemu/virtiofsd", upstreamFrom: "--guard-upstream"},
		},
		{
			name: "no plan: as Kata",
			args: []string{"--guard-upstream=/usr/libexec/virtiofsd"},
			want: decision{protection: protection.None, protectionFrom: "--guard-no-plan", upstream: "/usr/libexec/virtiofsd", upstreamFrom: "--guard-upstream"},
		},
		{
			name: "no plan: the default upstream, as Kata",
			dflt: installed,
			want: decision{protection: protection.None, protectionFrom: "--guard-no-plan", upstream: installed, upstreamFrom: "default upstream_virtiofsd"},
		},
		{
			name: "no plan, no upstream installed: serve",
			want: decision{protection: protection.None, protectionFrom: "--guard-no-plan"},
		},
		{
			name: "no plan: --guard-upstream over the default",
			args: []string{"--guard-upstream=/usr/libexec/virtiofsd"},
			dflt: installed,
			want: decision{protection: protection.None, protectionFrom: "--guard-no-plan", upstream: "/usr/libexec/virtiofsd", upstreamFrom: "--guard-upstream"},
		},
		{
			name: "plan without an upstream: serve, not the default",
			plan: &plan.Plan{SandboxID: id, Action: plan.Warn, Protection: protection.NoSubmounts},
			dflt: installed,
			want: decision{protection: protection.NoSubmounts, protectionFrom: "plan"},
		},
		{
			name: "no plan: operator's default",
			args: []string{"--guard-no-plan=no-submounts"},
			dflt: installed,
			want: decision{protection: protection.NoSubmounts, protectionFrom: "--guard-no-plan", upstream: installed, upstreamFrom: "default upstream_virtiofsd"},
		},
		{
			name:   "not a Kata share: the default upstream",
			shared: "/srv/share",
			dflt:   installed,
			want:   decision{protection: protection.None, protectionFrom: "--guard-no-plan", upstream: installed, upstreamFrom: "default upstream_virtiofsd"},
		},
		{
			name:   "not a Kata share",
			shared: "/srv/share",
			args:   []string{"--guard-protection=no-submounts"},
			want:   decision{protection: protection.NoSubmounts, protectionFrom: "--guard-protection"},
		},
		{
			name:     "no plan: fail",
			args:     []string{"--guard-no-plan=fail"},
			wantErr:  errdefs.ErrFailedPrecondition,
			errMatch: "no plan for sandbox sb-decide",
		},
		{
			name:     "refusing plan",
			plan:     &plan.Plan{SandboxID: id, Action: plan.Refuse, Reason: "vulnerable", Protection: protection.None},
			wantErr:  errdefs.ErrFailedPrecondition,
			errMatch: "refuses sandbox sb-decide: vulnerable",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := t.TempDir()
			shared := tc.shared
			if shared == "" {
				shared = filepath.Join(t.TempDir(), "sandboxes", id, "shared")
			}
			if tc.plan != nil {
				require.NoError(t, plan.Write(stateDir, tc.plan))
			}
			o, err := virtiofsd.Parse(append([]string{"--shared-dir=" + shared, "--fd=3", "--guard-state-dir=" + stateDir}, tc.args...))
			require.NoError(t, err)
			dflt := tc.dflt
			if dflt == "" {
				dflt = notInstalled
			}
			d, err := decide(o, plan.Read, dflt)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.ErrorContains(t, err, tc.errMatch)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want.protection, d.protection)
			require.Equal(t, tc.want.protectionFrom, d.protectionFrom)
			require.Equal(t, tc.want.upstream, d.upstream)
			require.Equal(t, tc.want.upstreamFrom, d.upstreamFrom)
			require.Equal(t, tc.plan == nil, d.noPlan != "", "noPlan: %q", d.noPlan)
			require.Equal(t, tc.want, decision{protection: d.protection, protectionFrom: d.protectionFrom, upstream: d.upstream, upstreamFrom: d.upstreamFrom})
		})
	}
}

// TestServeModeOptions starts kata-virtiofsd's own daemon (protection
// recover from the plan) with options beyond Kata's: refused ones stop it
// before anything exists, honoured ones take effect.
func TestServeModeOptions(t *testing.T) {
	const id = "sb-serve-options"

	t.Run("refused: one error naming each, nothing left behind", func(t *testing.T) {
		shared, stateDir := kataShare(t, id)
		writePlan(t, stateDir, id, protection.Recover, "")
		sockDir := t.TempDir()
		args := []string{"--cache=auto", "--shared-dir=" + shared, "--socket-path=" + filepath.Join(sockDir, "vhost.sock"),
			"--thread-pool-size=1", "--announce-submounts", "--guard-state-dir=" + stateDir,
			"--tag=myfs", "--readonly", "--xattrmap=:map::user.virtiofs.:", "--writeback", "--log-level=off"}
		out := runToFailure(t, args, nil)
		// --log-level=off silences the log, not the failure.
		require.Equal(t, "kata-virtiofsd: protection recover (from plan) needs kata-virtiofsd's own daemon: "+
			"kata-virtiofsd's own virtio-fs daemon cannot honour --xattrmap=:map::user.virtiofs.:, --writeback, --tag=myfs: "+
			"remove them from Kata's virtio_fs_extra_args (the README lists what serve mode supports): not implemented; "+
			"use an upstream virtiofsd (--guard-upstream=PATH) with protection no-submounts or none\n", out)
		ents, err := os.ReadDir(sockDir)
		require.NoError(t, err)
		require.Empty(t, ents, "socket left behind")
		ents, err = os.ReadDir(stateDir)
		require.NoError(t, err)
		require.Len(t, ents, 1, "only the plan in the state dir")
	})

	t.Run("honoured", func(t *testing.T) {
		shared, stateDir := kataShare(t, id)
		writePlan(t, stateDir, id, protection.Recover, "")
		sock, fd := listener(t)
		// The test binary has cgo: no sandbox for our daemon. With Kata's
		// --syslog the log goes to syslog: a daemon of the test's own, so
		// that it does not matter whether the host has one.
		var sl *testutil.Syslog
		cmd, out := startWith(t, withSyslog(t, &sl), append([]string{"--syslog"}, kataArgs(shared, "--guard-state-dir="+stateDir, "--sandbox=none",
			"--readonly", "--rlimit-nofile=1000", "--inode-file-handles=prefer", "--log-level=debug")...), fd)
		fd.Close()
		features := getFeatures(t, sock)
		require.NotZero(t, features&(1<<32), "VIRTIO_F_VERSION_1; output:\n%s", out)
		limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
		require.NoError(t, err)
		require.Regexp(t, `Max open files\s+1000\s+1000\s`, string(limits))
		_, err = sl.WaitFor("frontend connected; serving", 10*time.Second)
		require.NoError(t, err, "output:\n%s", out)
		// With --syslog the log goes to syslog; stderr has only the ready
		// line runtime-rs waits for there.
		require.Equal(t, "kata-virtiofsd: "+virtiofsd.ReadyLine+" (fd 3)\n", out.String(), "with --syslog only the ready line goes to stderr")
		log := sl.String()
		require.Contains(t, log, " kata[", "Kata's syslog tag")
		require.Contains(t, log, "level=debug", "--log-level=debug")
		require.Contains(t, log, `options="--inode-file-handles=prefer"`)
		require.Contains(t, log, "readonly=true")
		require.Contains(t, log, "seccomp=none")
		require.NotContains(t, log, "level=error")
	})

	t.Run("log level warn hides the decision", func(t *testing.T) {
		shared, stateDir := kataShare(t, id)
		writePlan(t, stateDir, id, protection.Recover, "")
		sock, fd := listener(t)
		_, out := start(t, kataArgs(shared, "--guard-state-dir="+stateDir, "--sandbox=none", "--log-level=warn"), fd)
		fd.Close()
		getFeatures(t, sock)
		require.NotContains(t, out.String(), "level=info")
	})

	t.Run("print capabilities", func(t *testing.T) {
		cmd, out := start(t, []string{"--print-capabilities"}, nil)
		require.Zero(t, waitExit(t, cmd, out))
		require.Equal(t, "{\n  \"type\": \"fs\"\n}\n", out.String())
	})
}

func TestServeSeam(t *testing.T) {
	// The serve path gets the parsed options with the decision applied.
	var got *virtiofsd.Options
	l := launcher{
		readPlan: plan.Read,
		serve: func(ctx context.Context, o *virtiofsd.Options) error {
			got = o
			return nil
		},
		stdout: io.Discard, stderr: io.Discard,
	}
	shared := filepath.Join(t.TempDir(), "sandboxes", "sb-serve", "shared")
	stateDir := t.TempDir()
	writePlan(t, stateDir, "sb-serve", protection.NoSubmounts, "")
	_, fd := listener(t)
	// The listener's own fd number stands in for Kata's fd 3.
	args := []string{"--cache=never", "--shared-dir=" + shared, fmt.Sprintf("--fd=%d", fd.Fd()),
		"--thread-pool-size=4", "--announce-submounts", "--xattr", "--sandbox=chroot", "--guard-state-dir=" + stateDir}
	require.NoError(t, l.run(context.Background(), args))
	require.NotNil(t, got)
	require.Equal(t, "sb-serve", got.SandboxID)
	require.Equal(t, protection.NoSubmounts, got.Protection)
	require.False(t, got.AnnounceSubmounts)
	require.Equal(t, int(fd.Fd()), got.FD)
	require.Equal(t, virtiofsd.CacheNever, got.Cache)
	require.Equal(t, 4, got.ThreadPoolSize)
	require.True(t, got.Xattr)
	require.Equal(t, virtiofsd.SandboxChroot, got.Sandbox)
	flags, err := unix.FcntlInt(fd.Fd(), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.Zero(t, flags&unix.FD_CLOEXEC, "the socket stays open across exec")
}

// BenchmarkStartToFirstReply measures a share's start as Kata sees it: from
// spawning the daemon to its first vhost-user reply, for the upstream started
// directly and through kata-virtiofsd (parse, plan, cached detection, exec).
func BenchmarkStartToFirstReply(b *testing.B) {
	testutil.RequiresRoot(b)
	for _, dm := range []struct {
		name string
		path func(testing.TB) string
	}{{"rust", rustDaemon}, {"qemu-c", cDaemon}} {
		upstream := dm.path(b)
		id := "sb-bench-" + dm.name
		shared, stateDir := kataShare(b, id)
		writePlan(b, stateDir, id, protection.NoSubmounts, upstream)
		for _, via := range []string{"direct", "kata-virtiofsd"} {
			b.Run(dm.name+"/"+via, func(b *testing.B) {
				for b.Loop() {
					sock, fd := listener(b)
					var cmd *exec.Cmd
					if via == "direct" {
						o, err := virtiofsd.Parse(kataArgs(shared))
						require.NoError(b, err)
						d, err := virtiofsd.Detect(context.Background(), upstream, statedir.VirtiofsdCacheDir(stateDir))
						require.NoError(b, err)
						args, _, err := virtiofsd.Translate(o, d, protection.NoSubmounts, virtiofsd.ProbeHost())
						require.NoError(b, err)
						cmd = exec.Command(upstream, args...)
						cmd.ExtraFiles = []*os.File{fd}
						require.NoError(b, cmd.Start())
					} else {
						cmd, _ = start(b, kataArgs(shared, "--guard-state-dir="+stateDir), fd)
					}
					getFeatures(b, sock)
					cmd.Process.Kill()
					cmd.Wait()
					fd.Close()
				}
			})
		}
	}
}

// TestReadyLine: runtime-rs starts the VM only once the daemon's stderr
// says the socket waits for a connection; kata-virtiofsd says so in every
// mode once the socket listens (the runtime-rs launcher in test/katalaunch
// checks the --socket-path modes), and never without a socket.
func TestReadyLine(t *testing.T) {
	testutil.RequiresRoot(t)
	shared, stateDir := kataShare(t, "sb-ready")
	t.Run("own daemon, inherited fd", func(t *testing.T) {
		sock, fd := listener(t)
		_, out := start(t, kataArgs(shared, "--guard-state-dir="+stateDir, "--sandbox=none", "--guard-protection=recover"), fd)
		fd.Close()
		require.Eventually(t, func() bool {
			return strings.Contains(out.String(), "kata-virtiofsd: Waiting for vhost-user socket connection... (fd 3)\n")
		}, 10*time.Second, 10*time.Millisecond, "output:\n%s", out)
		getFeatures(t, sock)
	})
	t.Run("upstream, inherited fd, log to syslog", func(t *testing.T) {
		sock, fd := listener(t)
		cmd, out := start(t, append([]string{"--syslog"}, kataArgs(shared, "--guard-state-dir="+stateDir,
			"--guard-protection=none", "--guard-upstream="+rustDaemon(t), "--log-level=error")...), fd)
		fd.Close()
		var argv []string
		getFeaturesThen(t, sock, func() { argv = cmdline(t, cmd.Process.Pid) })
		require.Contains(t, strings.Join(argv, " "), "--fd=3")
		require.Contains(t, out.String(), "kata-virtiofsd: Waiting for vhost-user socket connection... (fd 3)\n")
	})
	t.Run("no socket: no line", func(t *testing.T) {
		cmd, out := start(t, []string{"--print-capabilities", "--guard-protection=recover"}, nil)
		require.Equal(t, 0, waitExit(t, cmd, out))
		require.Contains(t, out.String(), `"type": "fs"`)
		require.NotContains(t, out.String(), "Waiting")
	})
}
