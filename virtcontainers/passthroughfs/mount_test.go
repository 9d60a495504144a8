package passthroughfs

import (
	"context"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/posix"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// hostShare is a shared directory with a marker file beside it, as on a Kata
// host where the share sits among other sandboxes' files.
type hostShare struct {
	base, src, marker string
}

func newHostShare(t testing.TB) hostShare {
	base, err := os.MkdirTemp("", "ksg-ptfs-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	s := hostShare{base: base, src: filepath.Join(base, "share"), marker: "ksg-marker-outside"}
	require.NoError(t, os.Mkdir(s.src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(base, s.marker), []byte("host only"), 0o644))
	return s
}

// requireUntouched asserts nothing beside the share was created or changed.
func (s hostShare) requireUntouched(t testing.TB) {
	ents, err := os.ReadDir(s.base)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"share", s.marker}, names, "files beside the share")
	b, err := os.ReadFile(filepath.Join(s.base, s.marker))
	require.NoError(t, err)
	require.Equal(t, "host only", string(b))
}

// mountFS serves fs on a new mount point through the kernel's FUSE client,
// with the options a virtio-fs guest mounts with (default_permissions).
func mountFS(t *testing.T, fs *FS) string {
	testutil.RequiresRoot(t)
	_, err := os.Stat("/dev/fuse")
	testutil.Require(t, err == nil, "needs /dev/fuse")
	base, err := os.MkdirTemp("", "ksg-ptfs-mnt-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(base, 0o755))
	mnt := filepath.Join(base, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	mo := fs.MountOptions()
	mo.DirectMountStrict = true
	mo.Logger = log.New(testWriter{t}, "go-fuse: ", 0)
	srv, err := fuse.NewServer(fs, mnt, mo)
	require.NoError(t, err)
	go srv.Serve()
	require.NoError(t, srv.WaitMount())
	t.Cleanup(func() {
		require.NoError(t, srv.Unmount())
		srv.Wait()
		require.NoError(t, fs.Close())
		os.RemoveAll(base)
	})
	return mnt
}

func newFS(t testing.TB, src string, opts Options) *FS {
	fs, err := New(context.Background(), src, opts)
	require.NoError(t, err)
	return fs
}

func TestPOSIXOverFUSE(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"cache=auto,xattr", Options{Cache: CacheAuto, Xattr: true, AnnounceSubmounts: true}},
		{"cache=never", Options{Cache: CacheNever}},
		{"cache=always,xattr", Options{Cache: CacheAlways, Xattr: true}},
		{"cache=metadata", Options{Cache: CacheMetadata, AnnounceSubmounts: true}},
		// Every READ and WRITE above 4000 bytes served in several calls,
		// cut off page boundaries.
		{"cache=auto,calls of 4000 bytes", Options{Cache: CacheAuto, MaxIOPerCall: 4000}},
		{"cache=never,calls of 4000 bytes", Options{Cache: CacheNever, MaxIOPerCall: 4000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newHostShare(t)
			mnt := mountFS(t, newFS(t, share.src, tc.opts))
			direct := tc.opts.Cache == CacheNever || tc.opts.Cache == CacheMetadata
			posix.All(t, mnt, posix.Options{Xattr: tc.opts.Xattr, DirectIO: direct, Mounted: true, EscapeMarker: share.marker})
			share.requireUntouched(t)
		})
	}
}

// testWriter sends go-fuse's session log to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
