package passthroughfs

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPath returns a fresh O_PATH descriptor, so the table has a real fd to
// close and double closes would show as EBADF.
func openPath(t testing.TB) int {
	fd, err := unix.Open(os.TempDir(), unix.O_PATH|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	return fd
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func TestInodeTableLookupCounts(t *testing.T) {
	tab := newInodeTable(nil)
	root := tab.setRoot(inodeKey{dev: 1, ino: 1}, openPath(t), unix.S_IFDIR)
	require.EqualValues(t, rootID, root.nodeid)

	k := inodeKey{dev: 1, ino: 42, mnt: 7}
	fd1 := openPath(t)
	id := tab.ref(k, fd1, unix.S_IFREG, false, nil)
	require.EqualValues(t, 2, id, "first node ID after the root")

	// A second lookup of the same host file reuses the inode and closes
	// the new descriptor.
	fd2 := openPath(t)
	require.Equal(t, id, tab.ref(k, fd2, unix.S_IFREG, false, nil))
	require.False(t, fdOpen(fd2), "duplicate descriptor closed")
	require.True(t, fdOpen(fd1))
	n, ok := tab.lookupCount(id)
	require.True(t, ok)
	require.EqualValues(t, 2, n)

	// Same inode number on another mount is another file.
	other := tab.ref(inodeKey{dev: 1, ino: 42, mnt: 8}, openPath(t), unix.S_IFREG, false, nil)
	require.NotEqual(t, id, other)

	tab.forget(id, 1)
	n, ok = tab.lookupCount(id)
	require.True(t, ok)
	require.EqualValues(t, 1, n)
	require.True(t, fdOpen(fd1))

	// Pinned by a request in flight, the descriptor outlives the forget.
	ino := tab.get(id)
	require.NotNil(t, ino)
	tab.forget(id, 1)
	require.Nil(t, tab.get(id), "forgotten")
	require.True(t, fdOpen(fd1), "still used by a request")
	ino.release()
	require.False(t, fdOpen(fd1), "closed with the last pin")

	// The host file seen again gets a new node ID: node IDs are never reused.
	again := tab.ref(k, openPath(t), unix.S_IFREG, false, nil)
	require.Greater(t, again, other)

	// Forgetting more than held, an unknown node or the root is harmless.
	tab.forget(again, 100)
	require.Nil(t, tab.get(again))
	tab.forget(again, 1)
	tab.forget(12345, 1)
	tab.forget(rootID, 1000)
	require.NotNil(t, tab.get(rootID))
	require.Equal(t, 2, tab.len(), "root and the other-mount inode")
}

func TestInodeTableConcurrentLookupForget(t *testing.T) {
	tab := newInodeTable(nil)
	tab.setRoot(inodeKey{ino: 1}, openPath(t), unix.S_IFDIR)
	const workers, rounds, files = 8, 2000, 16
	var mu sync.Mutex
	seen := map[uint64]inodeKey{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				k := inodeKey{dev: 1, ino: uint64(100 + (r*7+w)%files)}
				id := tab.ref(k, openPath(t), unix.S_IFREG, false, nil)
				mu.Lock()
				if prev, ok := seen[id]; ok && prev != k {
					mu.Unlock()
					panic(fmt.Sprintf("node ID %d reused for %v and %v", id, prev, k))
				}
				seen[id] = k
				mu.Unlock()
				if ino := tab.get(id); ino != nil {
					if !fdOpen(ino.fd) {
						t.Errorf("node %d: pinned descriptor closed", id)
					}
					ino.release()
				}
				tab.forget(id, 1)
			}
		}(w)
	}
	wg.Wait()
	require.Equal(t, 1, tab.len(), "every lookup forgotten: only the root left")
	for id := range seen {
		require.Nil(t, tab.get(id))
	}
}

func TestHandleTable(t *testing.T) {
	tab := newHandleTable()
	fd := openPath(t)
	fh := tab.add(&handle{fd: fd, nodeid: 5})
	require.Nil(t, tab.get(fh, 6), "a handle used on another node is unknown")
	require.Nil(t, tab.get(fh+1, 5))
	h := tab.get(fh, 5)
	require.NotNil(t, h)
	require.False(t, tab.remove(fh, 6))
	require.True(t, tab.remove(fh, 5))
	require.False(t, tab.remove(fh, 5), "released twice")
	require.True(t, fdOpen(fd), "in use by a request")
	h.release()
	require.False(t, fdOpen(fd))
	require.Greater(t, tab.add(&handle{fd: openPath(t), nodeid: 5}), fh, "handles are not reused")
	tab.clear()
}
