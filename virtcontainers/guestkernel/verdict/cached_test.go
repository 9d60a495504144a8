package verdict

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCached(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "vmlinux")
	require.NoError(t, os.WriteFile(img, []byte("an image"), 0o644))
	st, err := os.Stat(img)
	require.NoError(t, err)
	cacheDir := filepath.Join(dir, "cache")
	opts := Options{CacheDir: cacheDir}
	Cache{Dir: cacheDir}.Store(ctx, KeyOf(st, opts), &Report{Path: "/elsewhere", Format: "elf", Release: "6.1.69", Banner: bannerVuln61, Verdict: Fixed})

	t.Run("hit is judged for the caller", func(t *testing.T) {
		rep, ok := Cached(ctx, img, opts)
		require.True(t, ok)
		require.Equal(t, img, rep.Path)
		require.Equal(t, "elf", rep.Format)
		require.Equal(t, Vulnerable, rep.Verdict, "the stored verdict is never used")
		require.Equal(t, EvidenceVersion, rep.Evidence)
		require.Equal(t, "6.1.69", rep.Version)

		rep, ok = Cached(ctx, img, Options{CacheDir: cacheDir, FixedReleases: []string{"6.1.69"}})
		require.True(t, ok)
		require.Equal(t, Fixed, rep.Verdict)
		require.Equal(t, EvidenceOverride, rep.Evidence)
	})

	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, tc := range []struct {
		name string
		path string
		opts Options
	}{
		{"no cache dir", img, Options{}},
		{"other options", img, Options{CacheDir: cacheDir, HeaderOnly: true}},
		{"other budget", img, Options{CacheDir: cacheDir, MaxDecompressed: 1 << 20}},
		{"missing file", filepath.Join(dir, "nope"), opts},
		{"directory", dir, opts},
		{"empty file", empty, opts},
	} {
		t.Run("miss: "+tc.name, func(t *testing.T) {
			rep, ok := Cached(ctx, tc.path, tc.opts)
			require.False(t, ok)
			require.Nil(t, rep)
		})
	}

	t.Run("miss: image changed", func(t *testing.T) {
		require.NoError(t, os.WriteFile(img, []byte("another image"), 0o644))
		_, ok := Cached(ctx, img, opts)
		require.False(t, ok)
	})
}
