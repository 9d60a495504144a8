package verdict

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestJudgeCached(t *testing.T) {
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
		rep, ok := JudgeCached(ctx, img, opts)
		require.True(t, ok)
		require.Equal(t, img, rep.Path)
		require.Equal(t, "elf", rep.Format)
		require.Equal(t, Vulnerable, rep.Verdict, "the stored verdict is never used")
		require.Equal(t, EvidenceVersion, rep.Evidence)
		require.Equal(t, "6.1.69", rep.Version)

		rep, ok = JudgeCached(ctx, img, Options{CacheDir: cacheDir, FixedReleases: []string{"6.1.69"}})
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
			rep, ok := JudgeCached(ctx, tc.path, tc.opts)
			require.False(t, ok)
			require.Nil(t, rep)
		})
	}

	t.Run("miss: image changed", func(t *testing.T) {
		require.NoError(t, os.WriteFile(img, []byte("another image"), 0o644))
		_, ok := JudgeCached(ctx, img, opts)
		require.False(t, ok)
	})

	// An image overwritten in place (same inode) with as many bytes, its
	// mtime then set back (touch -d), looks unchanged but for its ctime,
	// which no user can set.
	t.Run("miss: overwritten in place, same size, mtime restored", func(t *testing.T) {
		require.NoError(t, os.WriteFile(img, []byte("an image"), 0o644))
		before, err := os.Stat(img)
		require.NoError(t, err)
		Cache{Dir: cacheDir}.Store(ctx, KeyOf(before, opts), &Report{Format: "elf", Release: "6.1.69", Banner: bannerVuln61})
		_, ok := JudgeCached(ctx, img, opts)
		require.True(t, ok)

		overwriteKeepingMtime(t, img, []byte("my image"), before)
		after, err := os.Stat(img)
		require.NoError(t, err)
		require.True(t, os.SameFile(before, after), "same inode")
		require.Equal(t, before.Size(), after.Size())
		require.Equal(t, before.ModTime(), after.ModTime())
		_, ok = JudgeCached(ctx, img, opts)
		require.False(t, ok, "a stale entry answered for a rewritten image")
	})
}

// overwriteKeepingMtime rewrites path in place with b and sets its times
// back to those of before. The kernel stamps ctime at its clock's tick, so
// the rewrite is repeated until ctime has moved, as it has for any rewrite
// made a tick or more after the inspection.
func overwriteKeepingMtime(t *testing.T, path string, b []byte, before os.FileInfo) {
	t.Helper()
	ctime := func(fi os.FileInfo) syscall.Timespec { return fi.Sys().(*syscall.Stat_t).Ctim }
	for {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(b, 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, os.Chtimes(path, before.ModTime(), before.ModTime()))
		after, err := os.Stat(path)
		require.NoError(t, err)
		if ctime(after) != ctime(before) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
