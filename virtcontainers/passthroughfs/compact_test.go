package passthroughfs

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestCompacted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		peak, len int
		made      bool
	}{
		{"never held many: a few KiB of spare slots", compactMinPeak - 1, 0, false},
		{"still holds more than a quarter", 400, 101, false},
		{"down to a quarter", 400, 100, true},
		{"emptied", compactMinPeak, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[int]int{}
			for i := range tc.len {
				m[i] = i
			}
			got, peak, made := compacted(m, tc.peak)
			require.Equal(t, tc.made, made)
			require.Equal(t, m, got, "every entry kept")
			if tc.made {
				require.Equal(t, tc.len, peak, "the new map's most is what it holds")
			} else {
				require.Equal(t, tc.peak, peak)
			}
		})
	}
}

// A table that held thousands of inodes, forgotten down to a tenth, is made
// anew shard by shard; the inodes still held keep their node IDs, lookup
// counts and keys, and a second Compact finds nothing to do.
func TestInodeTableCompact(t *testing.T) {
	tab := newInodeTable(nil)
	const n = shards * 100
	key := func(i int) inodeKey { return inodeKey{dev: 1, ino: uint64(1000 + i), mnt: 1} }
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = tab.ref(key(i), -1, unix.S_IFREG, false, nil)
	}
	require.Zero(t, tab.compact(), "nothing forgotten yet")
	held := n / 10
	for _, id := range ids[held:] {
		tab.forget(id, 1)
	}
	require.Equal(t, 2*shards, tab.compact(), "every shard of both maps")
	require.Zero(t, tab.compact())
	require.Equal(t, held, tab.len())
	for i, id := range ids[:held] {
		count, ok := tab.lookupCount(id)
		require.True(t, ok)
		require.Equal(t, uint64(1), count)
		require.Equal(t, id, tab.ref(key(i), -1, unix.S_IFREG, false, nil), "found by its host key")
	}
	for _, id := range ids[held:] {
		_, ok := tab.lookupCount(id)
		require.False(t, ok)
	}
}

func TestHandleTableCompact(t *testing.T) {
	tab := newHandleTable()
	var fhs []uint64
	for range shards * 100 {
		fhs = append(fhs, tab.add(&handle{fd: -1, nodeid: 5}))
	}
	for _, fh := range fhs[shards:] {
		require.True(t, tab.remove(fh, 5))
	}
	require.Equal(t, shards, tab.compact())
	for _, fh := range fhs[:shards] {
		h := tab.get(fh, 5)
		require.NotNil(t, h, "open files stay open")
		h.release()
	}
	tab.clear()
}

// The point of Compact: a guest that walked a large tree and forgot it
// leaves the daemon as small as before the walk, not with the maps' slots
// for every inode it once held.
func TestCompactGivesBackTheSlotsOfForgottenInodes(t *testing.T) {
	for _, n := range []int{10_000, 100_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tab := newInodeTable(nil)
			empty := liveHeap()
			ids := make([]uint64, n)
			for i := range ids {
				ids[i] = tab.ref(inodeKey{dev: 1, ino: uint64(1000 + i), mnt: 1}, -1, unix.S_IFREG, false, nil)
			}
			for _, id := range ids {
				tab.forget(id, 1)
			}
			forgotten := liveHeap()
			tab.compact()
			compacted := liveHeap()
			runtime.KeepAlive(tab)
			kept := int64(forgotten) - int64(empty)
			left := int64(compacted) - int64(empty)
			t.Logf("%d inodes forgotten: the maps kept %d bytes (%d per inode); after Compact %d", n, kept, kept/int64(n), left)
			require.Greater(t, kept, int64(40*n), "Go maps keep their slots (else this test shows nothing)")
			require.Less(t, left, int64(64<<10))
		})
	}
}

// Compact runs while the guest looks up and forgets: no entry is lost or
// kept on either side of a shard being made anew. Each worker compacts after
// forgetting its files, while the others still look theirs up or forget.
func TestInodeTableCompactWhileServing(t *testing.T) {
	tab := newInodeTable(nil)
	// Each worker alone takes every shard past compactMinPeak.
	const workers = 4
	const files = workers * shards * 80
	var made atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for round := range 3 {
				var ids []uint64
				for i := w; i < files; i += workers {
					k := inodeKey{dev: 1, ino: uint64(1000 + i), mnt: 1}
					id := tab.ref(k, -1, unix.S_IFREG, false, nil)
					if got := tab.ref(k, -1, unix.S_IFREG, false, nil); got != id {
						t.Errorf("round %d: %v found as %d, then %d", round, k, id, got)
					}
					ids = append(ids, id)
				}
				for _, id := range ids {
					tab.forget(id, 2)
				}
				made.Add(int64(tab.compact()))
			}
		})
	}
	wg.Wait()
	t.Logf("%d shards made anew while serving", made.Load())
	require.NotZero(t, made.Load(), "compacted while serving (else this test shows nothing)")
	require.Zero(t, tab.len())
}
