package posix

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func marker(o Options) string {
	if o.EscapeMarker != "" {
		return o.EscapeMarker
	}
	return "ksg-posix-no-such-marker"
}

// checkEscapeDotDot climbs with ".." from inside the share.
func checkEscapeDotDot(t *testing.T, dir string, o Options) {
	root := filepath.Dir(dir)
	m := marker(o)
	// Inside the share, ".." stays inside.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	writeFile(t, filepath.Join(dir, "here"), []byte("x"), 0o644)
	require.Equal(t, "x", string(readFile(t, dir+"/sub/../here")))
	require.Equal(t, lstat(t, root).Ino, lstat(t, dir+"/..").Ino)
	if !o.Mounted {
		return
	}
	for _, p := range []string{
		filepath.Join(root, "..", m),
		root + "/../../../../../../../../" + m,
		dir + "/../../" + m,
	} {
		_, err := os.Lstat(p)
		requireErrno(t, err, unix.ENOENT)
	}
	ents, err := os.ReadDir(filepath.Join(root, ".."))
	require.NoError(t, err)
	for _, e := range ents {
		require.NotEqual(t, m, e.Name(), "the host directory beside the share is visible")
	}
}

// checkEscapeSymlink plants symlinks that point out of the share: the client
// resolves them in its own namespace, never on the host.
func checkEscapeSymlink(t *testing.T, dir string, o Options) {
	m := marker(o)
	links := map[string]string{
		"abs":   "/",
		"up":    "../../" + m,
		"deep":  strings.Repeat("../", 40) + m,
		"absm":  "/" + m,
		"loop1": "loop2",
		"loop2": "loop1",
	}
	for name, target := range links {
		require.NoError(t, os.Symlink(target, filepath.Join(dir, name)))
	}
	for name, target := range links {
		got, err := os.Readlink(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, target, got, "stored verbatim")
		require.Equal(t, uint32(unix.S_IFLNK), lstat(t, filepath.Join(dir, name)).Mode&unix.S_IFMT)
		_, err = unix.Open(filepath.Join(dir, name), unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		requireErrno(t, err, unix.ELOOP)
	}
	if o.Mounted {
		for _, name := range []string{"up", "deep", "absm"} {
			_, err := os.Stat(filepath.Join(dir, name))
			requireErrno(t, err, unix.ENOENT)
		}
		_, err := os.Stat(filepath.Join(dir, "abs", m))
		requireErrno(t, err, unix.ENOENT)
	}
	_, err := os.Stat(filepath.Join(dir, "loop1"))
	requireErrno(t, err, unix.ELOOP)
	// Through a symlinked directory component the client follows too.
	_, err = os.Stat(filepath.Join(dir, "abs"))
	require.NoError(t, err, "a symlink to / resolves to the client's root")
}

// checkEscapeRename moves entries towards the share's root and beyond.
func checkEscapeRename(t *testing.T, dir string, o Options) {
	root := filepath.Dir(dir)
	f := filepath.Join(dir, "f")
	writeFile(t, f, []byte("x"), 0o644)
	// Up to the share's root stays inside.
	top := filepath.Join(root, "posix-escape-rename-top")
	require.NoError(t, os.Rename(f, top))
	require.NoError(t, os.Rename(top, f))
	if !o.Mounted {
		return
	}
	for _, to := range []string{
		filepath.Join(root, "..", marker(o)+"-renamed"),
		root + "/../../../" + marker(o) + "-renamed",
	} {
		requireErrno(t, os.Rename(f, to), unix.EXDEV)
		requireErrno(t, os.Link(f, to), unix.EXDEV)
	}
	// Renaming the share's root itself is not possible from inside.
	err := os.Rename(root, root+"-moved")
	require.Error(t, err)
	require.Equal(t, "x", string(readFile(t, f)))
}
