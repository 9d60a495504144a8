package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// DefaultCache is where test/setup puts the assets the tests use when
// KSG_CACHE is not set.
const DefaultCache = "/var/cache/kata-submount-guard"

// InCI reports whether the tests run under CI (CI=true), where every
// prerequisite must be present.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips t with reason unless ok; under CI it fails t instead.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("prerequisite missing under CI: %s", reason)
	}
	t.Skipf("skipped: %s", reason)
}

// RequiresRoot needs euid 0.
func RequiresRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// RequiresEnv needs the switch env=1, which the Makefile sets for the suites
// that start real containerd or VMs. Without it the test is skipped even under
// CI: `go test ./...` alone runs only the fast tests.
func RequiresEnv(t testing.TB, env string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("skipped: set %s=1 (make test does) to run", env)
	}
}

// RequiresCommand needs name on PATH (or an absolute path that exists) and
// returns its path.
func RequiresCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, "needs "+name+" (test/setup installs it)")
	return p
}

// CacheDir is the directory holding test assets: KSG_CACHE or DefaultCache.
func CacheDir() string {
	if d := os.Getenv("KSG_CACHE"); d != "" {
		return d
	}
	return DefaultCache
}

// RequiresCacheFile needs the asset at rel under CacheDir and returns its path.
func RequiresCacheFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(CacheDir(), rel)
	_, err := os.Stat(p)
	Require(t, err == nil, p+" missing (run test/setup to build it)")
	return p
}

// SyncBuffer collects a process's output; it may be read while the process
// still writes to it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
