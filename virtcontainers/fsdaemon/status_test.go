package fsdaemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
)

func TestStatusFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	path := statedir.StatusPath(state, "sb-1")

	want := &Status{
		SandboxID: "sb-1", Protection: "recover", PID: 42, Running: true,
		Updated:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		RecoveryStats: passthroughfs.RecoveryStats{Recoveries: 2, Forgotten: 3, Held: 1, HeldByFD: 1, MaxHeld: passthroughfs.DefaultMaxHeld},
	}
	require.NoError(t, writeStatus(path, want))
	got, err := ReadStatus(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
	st, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	st, err = os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The JSON field names are the contract.
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, k := range []string{`"sandbox_id"`, `"protection"`, `"pid"`, `"running"`, `"updated"`, `"recoveries"`,
		`"forgotten"`, `"relooked"`, `"stale"`, `"evicted"`, `"held"`, `"held_by_fd"`, `"max_held"`} {
		require.Contains(t, string(b), k)
	}

	want.Running, want.Recoveries = false, 3
	require.NoError(t, writeStatus(path, want))
	got, err = ReadStatus(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
	ents, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file left")

	_, err = ReadStatus(statedir.StatusPath(state, "other"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestDecodeStatusRejects(t *testing.T) {
	for name, data := range map[string]string{
		"not json":      "recoveries: 1",
		"unknown field": `{"sandbox_id":"a","recoverd":1}`,
		"trailing":      `{"sandbox_id":"a"}{}`,
		"wrong type":    `{"recoveries":"one"}`,
		"too large":     `{"sandbox_id":"` + strings.Repeat("a", maxStatusSize) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := decodeStatus([]byte(data))
			require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
			require.Nil(t, s)
		})
	}
}

// The decoder's own error stays in the chain, beside the class.
func TestDecodeStatusKeepsCause(t *testing.T) {
	_, err := decodeStatus([]byte(`{"pid":"one"}`))
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	var typeErr *json.UnmarshalTypeError
	require.ErrorAs(t, err, &typeErr)
	require.Equal(t, "pid", typeErr.Field)
}

func FuzzDecodeStatus(f *testing.F) {
	f.Add([]byte(`{"sandbox_id":"sb","protection":"recover","pid":1,"running":true,"updated":"2026-01-02T03:04:05Z","recoveries":1,"forgotten":1,"relooked":0,"stale":0,"evicted":0,"held":1,"held_by_fd":1,"max_held":1024}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decodeStatus(data)
		if (s == nil) == (err == nil) {
			t.Fatalf("status %v, error %v", s, err)
		}
	})
}
