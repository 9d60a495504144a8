package shim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestReadAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    *string
		want    map[string]string
		wantErr error
	}{
		{name: "annotations", spec: ptr(`{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`),
			want: map[string]string{"io.kubernetes.cri.container-type": "sandbox"}},
		{name: "none", spec: ptr(`{"ociVersion":"1.0.2"}`)},
		{name: "missing", wantErr: errdefs.ErrNotFound},
		{name: "malformed", spec: ptr(`{"annotations":`), wantErr: errdefs.ErrInvalidArgument},
		{name: "wrong type", spec: ptr(`{"annotations":{"a":1}}`), wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.spec != nil {
				require.NoError(t, os.WriteFile(filepath.Join(dir, specFile), []byte(*tc.spec), 0o644))
			}
			got, err := readAnnotations(dir)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Contains(t, err.Error(), filepath.Join(dir, specFile))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestNoteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	_, err := readNote(dir)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	n := handoffNote{ID: "c1", SandboxID: "s1", ConfigPath: "/etc/k.toml", DelegateShim: "/opt/kata/bin/shim", StateDir: "/run/g"}
	require.NoError(t, writeNote(dir, n))
	got, err := readNote(dir)
	require.NoError(t, err)
	require.Equal(t, n, *got)
	fi, err := os.Stat(filepath.Join(dir, noteFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.NoError(t, os.WriteFile(filepath.Join(dir, noteFile), []byte(`{"id":"c1"}`), 0o600))
	_, err = readNote(dir)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	removeNote(dir)
	require.NoFileExists(t, filepath.Join(dir, noteFile))
}

func ptr(s string) *string { return &s }
