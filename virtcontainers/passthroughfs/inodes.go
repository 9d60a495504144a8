package passthroughfs

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// rootID is FUSE_ROOT_ID: the kernel knows the root without a LOOKUP.
const rootID = 1

// inodeKey identifies a host file: the inode number alone is unique only per
// superblock, and the same superblock can be mounted twice.
type inodeKey struct {
	dev, ino, mnt uint64
}

// inode is one host file the guest holds lookups on.
type inode struct {
	nodeid uint64
	key    inodeKey
	// fd is an O_PATH descriptor, closed when pins drops to zero.
	fd int
	// mode is the file type (S_IFMT bits); it cannot change for a host inode.
	mode uint32
	// pins counts the table's reference (while the guest holds lookups)
	// plus every request in flight using fd.
	pins atomic.Int32

	// Guarded by the mutex of the key shard that holds key.
	lookups  uint64
	gone     bool // no longer in the tables: the guest forgot it
	submount bool // announced with FUSE_ATTR_SUBMOUNT at least once
	// handle is the file handle of an announced submount root, where its
	// filesystem has them: an identity that survives without a descriptor.
	handle *fileHandle
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

// keeper decides the fate of an announced submount root whose last lookup
// the guest has forgotten. Guest kernels without Linux commit c4d361f66ac9
// forget it while a submount still uses the node ID (issue 9); a keeper that
// returns true takes over the table's pin and the node ID stays reserved for
// re-instantiation through inodeTable.reinstate. It runs with the key shard
// locked and must not block.
type keeper interface {
	keep(ino *inode) bool
}

const shards = 64 // power of two

type idShard struct {
	mu sync.RWMutex
	m  map[uint64]*inode
	_  [40]byte // keep shards on separate cache lines
}

type keyShard struct {
	mu sync.Mutex
	m  map[inodeKey]*inode
	_  [48]byte
}

// inodeTable maps node IDs to inodes and host identities to node IDs. Node
// IDs come from a 64-bit counter and are never handed out twice. Locks are
// per shard; the key shard is always taken before the ID shard.
type inodeTable struct {
	next  atomic.Uint64
	byID  [shards]idShard
	byKey [shards]keyShard
	keep  keeper
}

func newInodeTable(k keeper) *inodeTable {
	t := &inodeTable{keep: k}
	t.next.Store(rootID)
	for i := range t.byID {
		t.byID[i].m = make(map[uint64]*inode)
		t.byKey[i].m = make(map[inodeKey]*inode)
	}
	return t
}

func (t *inodeTable) idShard(nodeid uint64) *idShard { return &t.byID[nodeid&(shards-1)] }

func (t *inodeTable) keyShard(k inodeKey) *keyShard {
	h := k.ino*0x9e3779b97f4a7c15 ^ k.dev*0xbf58476d1ce4e5b9 ^ k.mnt
	return &t.byKey[(h>>32)&(shards-1)]
}

// setRoot installs the root inode under FUSE_ROOT_ID. Its lookup count never
// drops it: the kernel does not forget the root while mounted.
func (t *inodeTable) setRoot(key inodeKey, fd int, mode uint32) *inode {
	ino := &inode{nodeid: rootID, key: key, fd: fd, mode: mode, lookups: 1}
	ino.pins.Store(1)
	ks := t.keyShard(key)
	ks.mu.Lock()
	ks.m[key] = ino
	s := t.idShard(rootID)
	s.mu.Lock()
	s.m[rootID] = ino
	s.mu.Unlock()
	ks.mu.Unlock()
	return ino
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
// ID to give the guest.
func (t *inodeTable) ref(key inodeKey, fd int, mode uint32, submount bool, fh *fileHandle) uint64 {
	ks := t.keyShard(key)
	ks.mu.Lock()
	if ino := ks.m[key]; ino != nil {
		ino.lookups++
		if submount {
			ino.submount = true
		}
		if ino.handle == nil {
			ino.handle = fh
		}
		id := ino.nodeid
		ks.mu.Unlock()
		closeFD(fd)
		return id
	}
	ino := &inode{nodeid: t.next.Add(1), key: key, fd: fd, mode: mode, lookups: 1, submount: submount, handle: fh}
	ino.pins.Store(1)
	ks.m[key] = ino
	s := t.idShard(ino.nodeid)
	s.mu.Lock()
	s.m[ino.nodeid] = ino
	s.mu.Unlock()
	ks.mu.Unlock()
	return ino.nodeid
}

// forget drops n lookups from nodeid, as FORGET does; with the last one the
// inode leaves the table (or goes to the keeper) and its node ID is never
// used again for another file.
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
	if ino.gone {
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
	ino.gone = true
	if ks.m[ino.key] == ino {
		delete(ks.m, ino.key)
	}
	s.mu.Lock()
	delete(s.m, nodeid)
	s.mu.Unlock()
	kept := ino.submount && t.keep != nil && t.keep.keep(ino)
	ks.mu.Unlock()
	if !kept {
		ino.release()
	}
}

// reinstate puts an inode a keeper held back under its old node ID, with no
// lookups of its own (the guest's submount root reuses the node ID without a
// LOOKUP). If another inode took its key meanwhile, the host file was seen
// anew under a fresh node ID and reinstate reports false.
func (t *inodeTable) reinstate(ino *inode) bool {
	ks := t.keyShard(ino.key)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.m[ino.key] != nil || !ino.gone {
		return false
	}
	ino.gone = false
	ks.m[ino.key] = ino
	s := t.idShard(ino.nodeid)
	s.mu.Lock()
	s.m[ino.nodeid] = ino
	s.mu.Unlock()
	return true
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
			ino.release()
		}
		ks.mu.Unlock()
	}
}
