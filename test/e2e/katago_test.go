package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/katalaunch"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// kataGoLaunchers builds each tag's launcher once per test process (and
// once at all: BuildLauncher keeps it under $KSG_CACHE/kata).
var kataGoLaunchers struct {
	mu   sync.Mutex
	bins map[string]string
}

func kataGoLauncher(t *testing.T, tag string) (katalaunch.KataGo, string) {
	t.Helper()
	k := katalaunch.KataGo{Tag: tag, Dir: filepath.Join(testutil.CacheDir(), "kata", tag)}
	_, err := os.Stat(filepath.Join(k.Dir, "ARCHIVE_SHA256"))
	testutil.Require(t, err == nil, "Kata "+tag+" missing under "+k.Dir+" (test/setup/70-kata.sh builds it)")
	kataGoLaunchers.mu.Lock()
	defer kataGoLaunchers.mu.Unlock()
	if bin, ok := kataGoLaunchers.bins[tag]; ok {
		return k, bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := k.BuildLauncher(ctx, testutil.RepoRoot(t))
	require.NoError(t, err)
	if kataGoLaunchers.bins == nil {
		kataGoLaunchers.bins = map[string]string{}
	}
	kataGoLaunchers.bins[tag] = bin
	return k, bin
}

// startKataGo has Kata's own Go launch code of c's tag start kata-virtiofsd
// for c: the tag's default virtio_fs_extra_args and virtio_fs_cache plus the
// cell's --guard-* options, the share at <root>/sandboxes/<id>/shared, the
// socket Kata makes at <vm store>/<id>/vhost-fs.sock, which it returns. The
// launcher runs as harness.StartProcess runs a daemon, so the daemon Kata
// starts inherits the cell's /dev/log sink: its syslog lines (Kata passes
// --syslog) reach daemonLog. The cleanup has Kata's Stop end the daemon.
func startKataGo(t *testing.T, env *harness.Env, c cell, dir string, share *hostShare, daemonLog string) (runningDaemon, string) {
	t.Helper()
	k, bin := kataGoLauncher(t, kataGoTag[c.Launcher])
	def, err := k.Defaults()
	require.NoError(t, err)
	guard := harness.DaemonSpec{Protection: c.Protection, Upstream: env.Upstream[c.Daemon], StateDir: filepath.Join(dir, "state")}.ExtraArgs()
	l := katalaunch.GoLaunch{
		Daemon: env.KataVirtiofsd, SandboxID: share.SandboxID, SharedPath: share.Dir,
		VMStorePath: filepath.Join(dir, "vm"), Cache: def.Cache,
		ExtraArgs:           append(append([]string{}, def.ExtraArgs...), guard...),
		DisableGuestSELinux: true, // Kata's default
	}
	lenv, err := l.Env()
	require.NoError(t, err)
	stdinR, stdinW, err := os.Pipe()
	require.NoError(t, err)
	p, err := harness.StartProcess(bin, katalaunch.LauncherArgs, lenv, nil, stdinR, dir, daemonLog)
	stdinR.Close()
	require.NoError(t, err)
	t.Cleanup(func() {
		stdinW.Close() // Kata's Stop: SIGKILL to the daemon, the socket removed
		p.Wait(10 * time.Second)
		require.NoError(t, p.Stop())
	})
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(daemonLog)
		if strings.Contains(string(b), "KSG-STARTED ") {
			break
		}
		if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("Kata %s's launch code did not start kata-virtiofsd; log:\n%s", k.Tag, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("daemon (by Kata %s's Go code): %s, extra args %s", k.Tag, env.KataVirtiofsd, strings.Join(l.ExtraArgs, " "))
	return p, l.Socket()
}
