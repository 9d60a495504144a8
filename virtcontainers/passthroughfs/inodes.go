package passthroughfs

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// rootID is FUSE_ROOT_ID: the kernel knows the root without a LOOKUP.
const rootID = 1

// inodeKey identifies a host file: the inode number alone is unique only per
// superblock, and the same superblock can be mounted twice. dev is the
// kernel's 32-bit dev_t (major<<20 | minor: majors have 12 bits, minors 20)
// and mnt the mount ID statx(2) gives with STATX_MNT_ID (an int): 16 bytes,
// as every inode and every entry of the key maps carries one.
type inodeKey struct {
	ino      uint64
	dev, mnt uint32
}

// inode is one host file the guest holds lookups on. There is one per
// inode the guest knows, so its size is the daemon's memory per inode:
// fields are ordered to fit 64 bytes (a size class of Go's allocator), and
// what only submount roots use is behind sub.
type inode struct {
	nodeid uint64
	key    inodeKey
	// fd is an O_PATH descriptor, closed when pins drops to zero.
	fd int

	// Guarded by the mutex of the key shard that holds key.
	lookups uint64
	// sub is the recovery state of an announced submount root: nil for
	// every other inode, and for roots until recovery has something to
	// keep (see subRoot).
	sub *subRoot

	// pins counts the table's reference (while the guest holds lookups)
	// plus every request in flight using fd.
	pins atomic.Int32
	// mode is the file type (S_IFMT bits); it cannot change for a host inode.
	mode uint32

	// Guarded by the key shard's mutex, as lookups.
	gone     bool // no longer in the tables: the guest forgot it
	submount bool // announced with FUSE_ATTR_SUBMOUNT at least once
	// owned: the recovery table, not the guest, keeps this inode (a
	// recovered submount root with no lookups; see recover.go).
	owned bool
}

// subRoot is what recovery keeps on a submount root's inode. Guarded by
// the key shard's mutex; sub is never reset once set.
type subRoot struct {
	// handle is the file handle of an announced submount root, where its
	// filesystem has them and recovery is on: an identity that survives
	// without a descriptor.
	handle *fileHandle
	// root is the recovery table's entry of this node ID, on an inode
	// revived or reinstated from it.
	root *heldRoot
}

// handle returns the inode's file handle, or nil.
func (ino *inode) handle() *fileHandle {
	if ino.sub == nil {
		return nil
	}
	return ino.sub.handle
}

// heldRoot returns the recovery table's entry of the inode, or nil.
func (ino *inode) heldRoot() *heldRoot {
	if ino.sub == nil {
		return nil
	}
	return ino.sub.root
}

// setSub records a file handle (if not nil and none yet) and a recovery
// entry (if not nil); the key shard's mutex is held, or ino unpublished.
func (ino *inode) setSub(fh *fileHandle, h *heldRoot) {
	if fh == nil && h == nil {
		return
	}
	if ino.sub == nil {
		ino.sub = &subRoot{}
	}
	if ino.sub.handle == nil {
		ino.sub.handle = fh
	}
	if h != nil {
		ino.sub.root = h
	}
}

// fileHandle is what name_to_handle_at(2) returns: the host file's identity
// within its mount.
type fileHandle struct {
	fh      unix.FileHandle
	mountID int
}

// release drops one pin, closing the descriptor with the last one.
func (ino *inode) release() {
	if ino.pins.Add(-1) == 0 {
		closeFD(ino.fd)
	}
}

const shards = 64 // power of two

type idShard struct {
	mu   sync.RWMutex
	m    map[uint64]*inode
	peak int      // the most entries m held since it was made (compact.go)
	_    [32]byte // keep shards on separate cache lines
}

type keyShard struct {
	mu sync.Mutex
	m  map[inodeKey]*inode
	// held counts the recovery table's forgotten roots with a key of this
	// shard. It only grows under mu, so LOOKUP, which holds mu, asks the
	// recovery table only when the count is not zero.
	held atomic.Int32
	peak int // the most entries m held since it was made (compact.go)
	_    [36]byte
}

// inodeTable maps node IDs to inodes and host identities to node IDs. Node
// IDs come from a 64-bit counter and never name two host files. Locks are
// per shard; the key shard is always taken before the ID shard, and before
// the recovery table's lock.
type inodeTable struct {
	next  atomic.Uint64
	byID  [shards]idShard
	byKey [shards]keyShard
	// rec holds forgotten submount roots (protection recover); nil: off.
	rec *recoveryTable
}

func newInodeTable(rec *recoveryTable) *inodeTable {
	t := &inodeTable{rec: rec}
	t.next.Store(rootID)
	for i := range t.byID {
		t.byID[i].m = make(map[uint64]*inode)
		t.byKey[i].m = make(map[inodeKey]*inode)
	}
	return t
}

func (t *inodeTable) idShard(nodeid uint64) *idShard { return &t.byID[nodeid&(shards-1)] }

func (t *inodeTable) keyShard(k inodeKey) *keyShard {
	h := k.ino*0x9e3779b97f4a7c15 ^ uint64(k.dev)*0xbf58476d1ce4e5b9 ^ uint64(k.mnt)
	return &t.byKey[(h>>32)&(shards-1)]
}

// setRoot installs the root inode under FUSE_ROOT_ID. Its lookup count never
// drops it: the kernel does not forget the root while mounted.
func (t *inodeTable) setRoot(key inodeKey, fd int, mode uint32) *inode {
	ino := &inode{nodeid: rootID, key: key, fd: fd, mode: mode, lookups: 1}
	ino.pins.Store(1)
	ks := t.keyShard(key)
	ks.mu.Lock()
	t.insertLocked(ks, key, rootID, ino)
	ks.mu.Unlock()
	return ino
}

// insertLocked enters ino in both maps, under key in ks (whose lock the
// caller holds) and under nodeid in its node-ID shard, and records how many
// entries each shard now holds (compact.go).
func (t *inodeTable) insertLocked(ks *keyShard, key inodeKey, nodeid uint64, ino *inode) {
	ks.m[key] = ino
	grown(&ks.peak, len(ks.m))
	s := t.idShard(nodeid)
	s.mu.Lock()
	s.m[nodeid] = ino
	grown(&s.peak, len(s.m))
	s.mu.Unlock()
}

// get returns the inode for nodeid pinned, or nil if the guest has no
// lookup on it. The caller must release it.
func (t *inodeTable) get(nodeid uint64) *inode {
	s := t.idShard(nodeid)
	s.mu.RLock()
	ino := s.m[nodeid]
	if ino != nil {
		ino.pins.Add(1)
	}
	s.mu.RUnlock()
	return ino
}

// ref adds one lookup to the inode with key, creating it around fd if the
// table has none; fd is closed if an existing inode is used. submount marks
// an announced submount root, fh its file handle if any. It returns the node
// ID to give the guest: a new one, or, for a submount root the recovery
// table holds since the guest forgot it, its old one (the same host file,
// never another: see recoveryTable.revive).
func (t *inodeTable) ref(key inodeKey, fd int, mode uint32, submount bool, fh *fileHandle) uint64 {
	ks := t.keyShard(key)
	ks.mu.Lock()
	if ino := ks.m[key]; ino != nil {
		ino.lookups++
		if submount {
			ino.submount = true
		}
		ino.setSub(fh, nil)
		if ino.owned {
			// The guest counts the recovered root again.
			ino.owned = false
			t.rec.disown(ino.heldRoot())
		}
		id := ino.nodeid
		ks.mu.Unlock()
		closeFD(fd)
		return id
	}
	var h *heldRoot
	var unpin *inode
	if ks.held.Load() != 0 {
		h, unpin = t.rec.revive(ks, key, fh)
	}
	var id uint64
	if h != nil {
		id = h.nodeid
	} else {
		id = t.next.Add(1)
	}
	ino := &inode{nodeid: id, key: key, fd: fd, mode: mode, lookups: 1, submount: submount}
	ino.setSub(fh, h)
	ino.pins.Store(1)
	t.insertLocked(ks, key, ino.nodeid, ino)
	ks.mu.Unlock()
	if unpin != nil {
		unpin.release()
	}
	return id
}

// forget drops n lookups from nodeid, as FORGET does; with the last one the
// inode leaves the table, or the recovery table holds its identity (an
// announced submount root) or keeps it (a root it recovered before), and
// its node ID never names another file.
func (t *inodeTable) forget(nodeid, n uint64) {
	if nodeid == rootID {
		return
	}
	s := t.idShard(nodeid)
	s.mu.RLock()
	ino := s.m[nodeid]
	s.mu.RUnlock()
	if ino == nil {
		return
	}
	ks := t.keyShard(ino.key)
	ks.mu.Lock()
	if ino.gone || ino.owned {
		// An owned root has no lookup left to forget.
		ks.mu.Unlock()
		return
	}
	if n >= ino.lookups {
		ino.lookups = 0
	} else {
		ino.lookups -= n
	}
	if ino.lookups > 0 {
		ks.mu.Unlock()
		return
	}
	if h := ino.heldRoot(); h != nil && h.recovered {
		// This node ID was used after a FORGET once already: the guest
		// has a user of it that holds no lookup. Keep it served.
		ino.owned = true
		ev := t.rec.own(ino.heldRoot())
		ks.mu.Unlock()
		t.rec.evict(ev)
		return
	}
	ino.gone = true
	if ks.m[ino.key] == ino {
		delete(ks.m, ino.key)
	}
	s.mu.Lock()
	delete(s.m, nodeid)
	s.mu.Unlock()
	var pinTaken bool
	var ev evictions
	if ino.submount && t.rec != nil {
		pinTaken, ev = t.rec.hold(ks, ino)
	}
	ks.mu.Unlock()
	if !pinTaken {
		ino.release()
	}
	t.rec.evict(ev)
}

// lookupCount reports the guest's lookups on nodeid (tests and status).
func (t *inodeTable) lookupCount(nodeid uint64) (uint64, bool) {
	ino := t.get(nodeid)
	if ino == nil {
		return 0, false
	}
	defer ino.release()
	ks := t.keyShard(ino.key)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ino.lookups, !ino.gone
}

// len counts the inodes in the table.
func (t *inodeTable) len() int {
	n := 0
	for i := range t.byID {
		s := &t.byID[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// clear drops every inode but the root, as at DESTROY or Close.
func (t *inodeTable) clear(keepRoot bool) {
	for i := range t.byKey {
		ks := &t.byKey[i]
		ks.mu.Lock()
		for k, ino := range ks.m {
			if keepRoot && ino.nodeid == rootID {
				continue
			}
			delete(ks.m, k)
			s := t.idShard(ino.nodeid)
			s.mu.Lock()
			delete(s.m, ino.nodeid)
			s.mu.Unlock()
			ino.gone = true
			ino.owned = false
			ino.release()
		}
		ks.mu.Unlock()
	}
	t.rec.clear(t)
}
