package passthroughfs

import "sync"

// Go maps keep their capacity when entries are deleted: a table shard that
// once held many inodes or open files keeps their slots, 60-70 bytes per
// inode the guest held (a node-ID and a host-key entry), until the map is
// made anew. A guest that walks a large tree once (find, du, a backup)
// would leave its daemon that much larger for the sandbox's life: 0.7 MiB
// after 10 000 inodes, 5.6 MiB after 100 000
// (TestCompactGivesBackTheSlotsOfForgottenInodes, go1.26). Each shard
// remembers the most entries it held since it was last made, and Compact
// makes anew the shards that went down to a quarter of that.

// compactMinPeak is the fewest entries a shard must have held for Compact
// to make it anew: below, its spare slots are a few KiB.
const compactMinPeak = 64

// grown records that a shard's map now holds n entries.
func grown(peak *int, n int) {
	if n > *peak {
		*peak = n
	}
}

// compacted returns m made anew if it went down to a quarter of peak, and
// the shard's new peak; else m and peak unchanged.
func compacted[K comparable, V any](m map[K]V, peak int) (map[K]V, int, bool) {
	if peak < compactMinPeak || len(m) > peak/4 {
		return m, peak, false
	}
	fresh := make(map[K]V, len(m))
	for k, v := range m {
		fresh[k] = v
	}
	return fresh, len(fresh), true
}

// compactShard makes a shard's map anew, under its lock, if compacted says
// so, and returns 1 if it did.
func compactShard[K comparable, V any](mu sync.Locker, m *map[K]V, peak *int) int {
	mu.Lock()
	defer mu.Unlock()
	var made bool
	*m, *peak, made = compacted(*m, *peak)
	if made {
		return 1
	}
	return 0
}

// compact makes anew every shard of t that went down to a quarter of the
// most it held, and returns how many it made anew. Each shard is locked
// only while it is copied.
func (t *inodeTable) compact() int {
	n := 0
	for i := range t.byKey {
		ks := &t.byKey[i]
		n += compactShard(&ks.mu, &ks.m, &ks.peak)
	}
	for i := range t.byID {
		s := &t.byID[i]
		n += compactShard(&s.mu, &s.m, &s.peak)
	}
	return n
}

// compact is inodeTable.compact for the open files.
func (t *handleTable) compact() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		n += compactShard(&s.mu, &s.m, &s.peak)
	}
	return n
}

// Compact gives back the memory the node and file-handle tables kept from
// a time they held more (see compacted). It is meant for a quiet moment:
// it takes each of the tables' shard locks in turn, and copies what a
// shard holds. It returns how many shards it made anew.
func (fs *FS) Compact() int {
	return fs.inodes.compact() + fs.handles.compact()
}
