package posix

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Run against any directory, e.g. inside a VM guest:
//
//	posix.test -test.v -dir /mnt/share -mounted -xattr=false -direct-io -escape-marker NAME
//
// The environment variables KSG_POSIX_DIR, KSG_POSIX_MOUNTED=1,
// KSG_POSIX_XATTR=0|1, KSG_POSIX_DIRECT_IO=1 and KSG_POSIX_ESCAPE_MARKER do
// the same. Without a
// directory the suite runs against a plain host directory: the reference.
var (
	flagDir     = flag.String("dir", os.Getenv("KSG_POSIX_DIR"), "directory to test (default: a new temporary directory)")
	flagMounted = flag.Bool("mounted", os.Getenv("KSG_POSIX_MOUNTED") == "1", "the directory is the mount point of a share")
	flagXattr   = flag.Bool("xattr", os.Getenv("KSG_POSIX_XATTR") != "0", "the target supports user xattrs")
	flagDirect  = flag.Bool("direct-io", os.Getenv("KSG_POSIX_DIRECT_IO") == "1", "the target opens files with direct I/O (cache=never)")
	flagMarker  = flag.String("escape-marker", os.Getenv("KSG_POSIX_ESCAPE_MARKER"), "a file beside the share on the host that must stay unreachable")
)

func TestPOSIX(t *testing.T) {
	dir := *flagDir
	if dir == "" {
		dir = referenceDir(t)
	}
	All(t, dir, Options{Xattr: *flagXattr, DirectIO: *flagDirect, Mounted: *flagMounted, EscapeMarker: *flagMarker})
}

// referenceDir is a fresh host directory that other users can reach, so the
// checks that switch users see the same as in a guest.
func referenceDir(t *testing.T) string {
	base, err := os.MkdirTemp("", "ksg-posix-ref-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	dir := filepath.Join(base, "share")
	require.NoError(t, os.Mkdir(dir, 0o755))
	return dir
}

func TestChecksHaveUniqueNames(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Checks() {
		require.False(t, seen[c.Name], c.Name)
		require.NotNil(t, c.Run, c.Name)
		seen[c.Name] = true
	}
}
