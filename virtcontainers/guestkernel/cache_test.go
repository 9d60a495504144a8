package guestkernel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	img := writeTemp(t, "vmlinux", kernelELF(elfArches[0], bannerVuln61, nil))
	cacheDir := filepath.Join(t.TempDir(), "cache")
	opts := verdict.Options{CacheDir: cacheDir}

	first, err := Inspect(ctx, img, opts)
	require.NoError(t, err)
	names := cacheEntries(t, cacheDir)
	require.Len(t, names, 1)
	entry := filepath.Join(cacheDir, names[0])

	t.Run("hit returns the same report", func(t *testing.T) {
		again, err := Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, first, again)
	})

	t.Run("the shim's cached lookup agrees", func(t *testing.T) {
		for _, o := range []verdict.Options{opts, {CacheDir: cacheDir, FixedReleases: []string{"6.1.69"}}} {
			want, err := Inspect(ctx, img, o)
			require.NoError(t, err)
			got, ok := verdict.JudgeCached(ctx, img, o)
			require.True(t, ok)
			require.Equal(t, want, got)
		}
	})

	t.Run("hit is served from the entry", func(t *testing.T) {
		// Rewrite the cached facts: a hit must show them, proving no re-read.
		b, err := os.ReadFile(entry)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(entry, []byte(strings.ReplaceAll(string(b), "6.1.69", "6.1.77")), 0o644))
		t.Cleanup(func() { _ = os.WriteFile(entry, b, 0o644) })
		rep, err := Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, "6.1.77", rep.Release)
	})

	t.Run("verdict follows the caller's fixed releases", func(t *testing.T) {
		rep, err := Inspect(ctx, img, verdict.Options{CacheDir: cacheDir, FixedReleases: []string{"6.1.69"}})
		require.NoError(t, err)
		require.Equal(t, verdict.Fixed, rep.Verdict)
		require.Equal(t, verdict.EvidenceOverride, rep.Evidence)
		rep, err = Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, verdict.Vulnerable, rep.Verdict)
	})

	t.Run("corrupt entry is ignored and rewritten", func(t *testing.T) {
		require.NoError(t, os.WriteFile(entry, []byte("{not json"), 0o644))
		rep, err := Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, first, rep)
		b, err := os.ReadFile(entry)
		require.NoError(t, err)
		require.True(t, json.Valid(b))
	})

	t.Run("entry for another key is ignored", func(t *testing.T) {
		var e struct {
			Schema int            `json:"schema"`
			Key    map[string]any `json:"key"`
			Facts  map[string]any `json:"facts"`
		}
		b, err := os.ReadFile(entry)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &e))
		e.Key["ino"] = e.Key["ino"].(float64) + 1
		e.Facts["release"] = "9.9.9"
		b, err = json.Marshal(e)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(entry, b, 0o644))
		rep, err := Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, "6.1.69", rep.Release)
	})

	t.Run("a changed image is read again", func(t *testing.T) {
		require.NoError(t, os.WriteFile(img, kernelELF(elfArches[0], bannerFixed61, nil), 0o644))
		future := time.Now().Add(time.Hour)
		require.NoError(t, os.Chtimes(img, future, future))
		rep, err := Inspect(ctx, img, opts)
		require.NoError(t, err)
		require.Equal(t, "6.1.76", rep.Release)
		require.Len(t, cacheEntries(t, cacheDir), 2)
	})

	t.Run("header-only and full results are kept apart", func(t *testing.T) {
		bz := makeBzImage("6.1.76 (x) #1 SMP", withSize(kbuildCompress(t, compGzip, kernelELF(elfArches[0], bannerFixed61, makeBTF(t, binary.LittleEndian, shapeVuln))), 0))
		p := writeTemp(t, "bzImage", bz)
		head, err := Inspect(ctx, p, verdict.Options{CacheDir: cacheDir, HeaderOnly: true})
		require.NoError(t, err)
		full, err := Inspect(ctx, p, verdict.Options{CacheDir: cacheDir})
		require.NoError(t, err)
		require.Equal(t, verdict.EvidenceVersion, head.Evidence)
		require.Equal(t, verdict.EvidenceBTF, full.Evidence)
	})

	t.Run("errors are not cached", func(t *testing.T) {
		before := len(cacheEntries(t, cacheDir))
		_, err := Inspect(ctx, writeTemp(t, "junk", codeLike(4096, 5)), opts)
		require.Error(t, err)
		require.Len(t, cacheEntries(t, cacheDir), before)
	})

	t.Run("unusable cache dir does not fail inspection", func(t *testing.T) {
		notDir := writeTemp(t, "file", []byte("x"))
		rep, err := Inspect(ctx, img, verdict.Options{CacheDir: filepath.Join(notDir, "cache")})
		require.NoError(t, err)
		require.Equal(t, "6.1.76", rep.Release)
	})

	for _, name := range cacheEntries(t, cacheDir) {
		require.False(t, strings.Contains(name, ".tmp-"), "temporary file left: %s", name)
	}
}

// TestCacheConcurrentProcesses: several processes inspect one image with one
// cache directory at once, as shims starting together do. All must agree and
// leave exactly one whole entry.
func TestCacheConcurrentProcesses(t *testing.T) {
	if img := os.Getenv("KSG_GK_CACHE_IMG"); img != "" {
		for range 20 {
			rep, err := Inspect(context.Background(), img, verdict.Options{CacheDir: os.Getenv("KSG_GK_CACHE_DIR")})
			if err != nil {
				fmt.Println("ERROR", err)
				os.Exit(1)
			}
			b, _ := json.Marshal(rep)
			fmt.Println(string(b))
		}
		return
	}
	bz := makeBzImage("6.1.69 (x) #1 SMP", kbuildCompress(t, compGzip, kernelELF(elfArches[0], bannerVuln61, makeBTF(t, binary.LittleEndian, shapeFixed))))
	img := writeTemp(t, "bzImage", bz)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	want, err := Inspect(context.Background(), img, verdict.Options{})
	require.NoError(t, err)
	wantJSON, err := json.Marshal(want)
	require.NoError(t, err)

	const procs = 6
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*strings.Builder, procs)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestCacheConcurrentProcesses$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), "KSG_GK_CACHE_IMG="+img, "KSG_GK_CACHE_DIR="+cacheDir)
		outs[i] = &strings.Builder{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		require.NoError(t, cmds[i].Start())
	}
	for i, cmd := range cmds {
		require.NoError(t, cmd.Wait(), outs[i].String())
		lines := 0
		for _, line := range strings.Split(outs[i].String(), "\n") {
			if strings.HasPrefix(line, "{") {
				require.JSONEq(t, string(wantJSON), line)
				lines++
			}
		}
		require.Equal(t, 20, lines, outs[i].String())
	}
	names := cacheEntries(t, cacheDir)
	require.Len(t, names, 1, "one entry, no temporary files: %v", names)
}

// TestCacheKeyHasBuildRevision: the facts an older build's parsers found are
// not served to another build, so a parser fix needs no FactsSchema bump.
func TestCacheKeyHasBuildRevision(t *testing.T) {
	ctx := context.Background()
	img := writeTemp(t, "vmlinux", kernelELF(elfArches[0], bannerVuln61, nil))
	cacheDir := filepath.Join(t.TempDir(), "cache")
	older := verdict.Options{CacheDir: cacheDir, Revision: "1c3fce3"}
	_, err := Inspect(ctx, img, older)
	require.NoError(t, err)
	names := cacheEntries(t, cacheDir)
	require.Len(t, names, 1)
	// Mark the stored facts, so that a hit shows.
	entry := filepath.Join(cacheDir, names[0])
	b, err := os.ReadFile(entry)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(entry, []byte(strings.ReplaceAll(string(b), "6.1.69", "6.1.77")), 0o644))

	rep, err := Inspect(ctx, img, older)
	require.NoError(t, err)
	require.Equal(t, "6.1.77", rep.Release, "the same build is served from the cache")
	_, ok := verdict.JudgeCached(ctx, img, older)
	require.True(t, ok)

	newer := verdict.Options{CacheDir: cacheDir, Revision: "e6dd9ee"}
	_, ok = verdict.JudgeCached(ctx, img, newer)
	require.False(t, ok, "another build misses")
	rep, err = Inspect(ctx, img, newer)
	require.NoError(t, err)
	require.Equal(t, "6.1.69", rep.Release, "another build reads the image again")
	require.Len(t, cacheEntries(t, cacheDir), 2)
}
