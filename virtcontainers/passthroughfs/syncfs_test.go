package passthroughfs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// SYNCFS names the root of a guest superblock: a directory. Opening any
// other node to sync through it would open FIFOs and device nodes of the
// guest's choosing (opening some devices has effects of its own).
func TestSyncFsRefusesSpecialFiles(t *testing.T) {
	share := newHostShare(t)
	require.NoError(t, os.Mkdir(filepath.Join(share.src, "dir"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "file"), nil, 0o644))
	require.NoError(t, unix.Mkfifo(filepath.Join(share.src, "fifo"), 0o644))
	require.NoError(t, os.Symlink("file", filepath.Join(share.src, "link")))
	fs := newFS(t, share.src, Options{})
	defer fs.Close()
	for _, tc := range []struct {
		name string
		want fuse.Status
	}{
		{"dir", fuse.OK},
		{"file", fuse.OK},
		{"fifo", fuse.Status(syscall.EINVAL)},
		{"link", fuse.Status(syscall.EINVAL)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mustLookup(t, fs, rootID, tc.name)
			require.Equal(t, tc.want, fs.SyncFs(e.NodeId))
		})
	}
	require.Equal(t, fuse.OK, fs.SyncFs(rootID))
}
