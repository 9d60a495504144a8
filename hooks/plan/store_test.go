package plan

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

func samplePlan(id string) *Plan {
	return &Plan{
		SandboxID: id, ConfigPath: "/etc/kata-containers/configuration.toml", ConfigSource: "default", Hypervisor: "qemu",
		Kernel: verdict.Report{Path: "/opt/kata/share/kata-containers/vmlinux.container", Release: "6.1.69", Version: "6.1.69",
			Verdict: verdict.Vulnerable, Evidence: verdict.EvidenceBTF, Reason: "BTF lacks struct fuse_submount_lookup"},
		Action: Warn, Reason: "guest kernel lacks the fix", Protection: protection.NoSubmounts,
		UpstreamVirtiofsd: "/opt/kata/libexec/virtiofsd", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestPlanRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "guard")
	p := samplePlan("sb-1")
	require.NoError(t, Write(dir, p))

	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	st, err = os.Stat(statedir.PlanPath(dir, "sb-1"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	got, err := Read(dir, "sb-1")
	require.NoError(t, err)
	want := *p
	want.FormatVersion = formatVersion
	require.Equal(t, &want, got)
	require.Zero(t, p.FormatVersion, "Write stamps its own copy")

	// Nothing but the plan is left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// kata-virtiofsd's status file with protection recover goes too.
	status := statedir.StatusPath(dir, "sb-1")
	require.NoError(t, os.MkdirAll(filepath.Dir(status), 0o700))
	require.NoError(t, os.WriteFile(status, []byte("{}"), 0o600))
	require.NoError(t, Remove(dir, "sb-1"))
	_, err = Read(dir, "sb-1")
	require.True(t, errdefs.IsNotFound(err), err)
	require.NoFileExists(t, status)
	require.NoError(t, Remove(dir, "sb-1"), "removing twice is fine")
}

func TestPlanStateDirTightened(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, Write(dir, samplePlan("sb")))
	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
}

func TestPlanBadIDs(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []string{"", "a", "../etc/passwd", "a/b", ".hidden", "-x", "x y"} {
		t.Run(fmt.Sprintf("%q", id), func(t *testing.T) {
			require.True(t, errdefs.IsInvalidArgument(Write(dir, samplePlan(id))))
			_, err := Read(dir, id)
			require.True(t, errdefs.IsInvalidArgument(err))
			require.True(t, errdefs.IsInvalidArgument(Remove(dir, id)))
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)
	require.True(t, errdefs.IsInvalidArgument(Write(dir, nil)))
}

func TestReadPlanRejects(t *testing.T) {
	cases := []struct {
		name string
		body string
		msg  string
	}{
		{"not json", "{", "decode plan: unexpected EOF: invalid argument"},
		{"other sandbox", `{"sandbox_id":"other","action":"allow","protection":"none"}`, `it is the plan of sandbox "other": invalid argument`},
		{"unknown field", `{"sandbox_id":"sb","action":"allow","protection":"none","extra":1}`, `decode plan: json: unknown field "extra": invalid argument`},
		{"bad action", `{"sandbox_id":"sb","action":"maybe","protection":"none"}`, `decode plan: unknown action "maybe": invalid argument`},
		{"bad protection", `{"sandbox_id":"sb","action":"warn","protection":"all"}`, `decode plan: unknown protection "all": invalid argument`},
		{"trailing", `{"sandbox_id":"sb","action":"allow","protection":"none"} {}`, "decode plan: trailing data: invalid argument"},
		{"newer format", `{"format_version":2,"sandbox_id":"sb","action":"allow","protection":"none"}`,
			"decode plan: format_version 2 is newer than this build reads (up to 1): a newer containerd-shim-kata-v2 wrote it; install the same kata-submount-guard build"},
		{"negative format", `{"format_version":-1,"sandbox_id":"sb","action":"allow","protection":"none"}`, "decode plan: format_version -1 is not a version: invalid argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(statedir.PlanPath(dir, "sb"), []byte(tc.body), 0o600))
			_, err := Read(dir, "sb")
			require.ErrorContains(t, err, tc.msg)
			require.True(t, errdefs.IsInvalidArgument(err))
		})
	}
}

// TestPlanFormatVersion: a plan carries the version of its form; one written
// before the field existed (no format_version) still reads, as version 1.
func TestPlanFormatVersion(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Write(dir, samplePlan("sb")))
	data, err := os.ReadFile(statedir.PlanPath(dir, "sb"))
	require.NoError(t, err)
	require.Contains(t, string(data), `"format_version": 1,`)

	old := `{"sandbox_id":"sb","config_path":"/etc/kata-containers/configuration.toml","config_source":"default",` +
		`"delegate_kind":"go-3","hypervisor":"qemu","kernel":{"path":"/k","verdict":"vulnerable","evidence":"btf"},` +
		`"kernel_inspected":true,"action":"warn","reason":"r","protection":"recover","upstream_virtiofsd":"/u",` +
		`"unprotected":false,"created":"2026-01-02T03:04:05Z"}`
	require.NoError(t, os.WriteFile(statedir.PlanPath(dir, "sb"), []byte(old), 0o600))
	p, err := Read(dir, "sb")
	require.NoError(t, err)
	require.Equal(t, 1, p.FormatVersion)
	require.Equal(t, Warn, p.Action)
	require.Equal(t, protection.Recover, p.Protection)
}

// TestPlanConcurrentWriters has many writers replace one sandbox's plan
// while readers read it: every read sees one whole plan, and no temporary
// file is left behind.
func TestPlanConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Write(dir, samplePlan("sb")))
	const writers, rounds = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds*2)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				p := samplePlan("sb")
				p.Reason = fmt.Sprintf("writer %d round %d", w, i)
				if err := Write(dir, p); err != nil {
					errs <- err
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				p, err := Read(dir, "sb")
				if err != nil {
					errs <- err
					continue
				}
				if p.SandboxID != "sb" || p.Action != Warn {
					errs <- fmt.Errorf("torn plan: %+v", p)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "temporary files left behind")
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"sandbox_id":"sb","action":"allow","protection":"none"}`))
	f.Add([]byte(`{"sandbox_id":"sb","kernel":{"verdict":"fixed"},"action":"warn","protection":"no-submounts","created":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decode(data)
		if err != nil {
			require.Nil(t, p)
			require.True(t, errdefs.IsInvalidArgument(err))
			return
		}
		require.Contains(t, []Action{Allow, Warn, Refuse}, p.Action)
	})
}

// validIDRE is the rule validID implements by hand.
var validIDRE = regexp.MustCompile(validIDPattern)

// FuzzValidID: validID accepts exactly what Kata's regular expression
// accepts.
func FuzzValidID(f *testing.F) {
	for _, id := range []string{"sb", "a", "", "3f2c0b_x.y-z", "-a", "a/b", "a\n", "..", "ab\xff", "Ab9"} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		require.Equal(t, validIDRE.MatchString(id), validID(id), "%q", id)
	})
}
