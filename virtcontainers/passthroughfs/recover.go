package passthroughfs

import "time"

// Recovery of forgotten submount roots (protection recover, issue 9).
//
// A guest kernel without Linux commit c4d361f66ac9 mounts a submount whose
// root reuses the node ID of the directory in the parent superblock without
// a lookup of its own. When the parent's inode is evicted the guest sends
// FORGET for that node ID although the submount still uses it; a plain
// daemon then answers EBADF for ever. With recovery on, the FS holds the
// identity of every announced submount root whose last lookup is forgotten
// (the heldRoot below), and a later request on its node ID reinstates it
// under that node ID with no lookup of its own, as the buggy kernel counts.
// A fixed kernel forgets the node ID only when nothing uses it any more, so
// it never sends such a request: recovery then counts nothing.
//
// A held root is reinstated only if the shared directory still shows the
// very same directory at the same place: its path (taken from /proc/self/fd
// at the FORGET) must lead, without following symlinks, to a directory with
// the same (st_dev, st_ino, mount ID) and, where the filesystem has them, the
// same file handle (which also carries the inode's generation: inode numbers,
// devices and mount IDs are all reused by Linux). Where there is no file
// handle, the entry keeps the O_PATH descriptor, which pins the inode so that
// the key cannot name another file; such entries are checked against the
// host every sweepInterval and dropped once their directory has left the
// share, so a removed volume or container rootfs is not kept alive. A root
// that fails the check answers ESTALE, as virtiofsd answers for a file handle
// whose file is gone; never another file.
//
// Bounds: at most MaxHeld roots (DefaultMaxHeld) are held, forgotten ones
// and recovered ones (live, with no lookup of the guest) together; over the
// bound the longest-held forgotten root goes first, a recovered one only when
// no forgotten one is left. Requests on a dropped root get EBADF, as without
// recovery. One entry costs about 300 bytes plus its path (at most PATH_MAX,
// 4 KiB) and file handle (at most 128 bytes): 1024 entries with Kata's
// paths take about 400 KiB, at worst 4.6 MiB. Entries without a file handle,
// and recovered roots, hold one descriptor each.
//
// Locks: a key shard, then recoveryTable.mu. Everything of a heldRoot but
// its immutable identity is guarded by mu; inode.owned by the key shard.

// DefaultMaxHeld bounds the submount roots held for recovery.
const DefaultMaxHeld = 1024

// sweepInterval is how often roots held by descriptor are checked against
// the host.
const sweepInterval = 10 * time.Second

// RecoverOptions turn on the recovery of forgotten submount roots.
type RecoverOptions struct {
	// MaxHeld bounds the submount roots held; 0 means DefaultMaxHeld.
	MaxHeld int
	// Report, if set, receives the counters after they change (coalesced,
	// from a goroutine of the FS, never concurrently) and once more from
	// Close. It must not call back into the FS.
	Report func(RecoveryStats)

	// noHandles makes every entry fall back to its descriptor (tests).
	noHandles bool
	// beforeReinstate, if set, runs between a check of the host outside
	// the locks and the reinstatement (tests).
	beforeReinstate func()
}

// RecoveryStats are the counters of submount-root recovery, over the life of
// the FS. Their JSON form is part of the status file (fsdaemon.Status).
type RecoveryStats struct {
	// Recoveries counts requests on a forgotten submount root that were
	// served by reinstating it: each is a guest kernel losing a submount
	// root (Linux c4d361f66ac9 missing), and each is logged once.
	Recoveries uint64 `json:"recoveries"`
	// Forgotten counts FORGETs that took the last lookup of an announced
	// submount root whose identity was then held.
	Forgotten uint64 `json:"forgotten"`
	// Relooked counts held roots the guest looked up again by name: they
	// get their old node ID back, which is no recovery.
	Relooked uint64 `json:"relooked"`
	// Stale counts held roots found gone or replaced on the host; their
	// node IDs answer ESTALE.
	Stale uint64 `json:"stale"`
	// Evicted counts roots dropped because MaxHeld were held.
	Evicted uint64 `json:"evicted"`
	// Held is how many roots are held now, HeldByFD how many of them hold a
	// descriptor, MaxHeld the bound.
	Held     int `json:"held"`
	HeldByFD int `json:"held_by_fd"`
	MaxHeld  int `json:"max_held"`
}

// rootState is where a heldRoot is. A node ID that was ever held stays in
// byID until it is dead (rootEvicted), so a request on it finds its key,
// and under that key's shard lock its state is the truth.
type rootState uint8

const (
	// rootKept: forgotten by the guest; in byKey and the kept list.
	rootKept rootState = iota + 1
	// rootStale: gone from the host; in the kept list; ESTALE.
	rootStale
	// rootRecovered: reinstated and owned by the table (the guest holds no
	// lookup); live in the inode table and in the recovered list.
	rootRecovered
	// rootLive: live in the inode table and the guest holds lookups on it
	// (looked up again, after a recovery or instead of one); in no list.
	rootLive
	// rootEvicted: dropped; in nothing (a recovered root evicted by the
	// bound stays in byID until evict takes it out of the inode table).
	rootEvicted
)

// heldRoot is one submount root the guest forgot.
type heldRoot struct {
	nodeid uint64
	key    inodeKey
	handle *fileHandle // nil: the identity is the descriptor of ino
	path   string      // relative to the shared directory

	// Guarded by recoveryTable.mu.
	state rootState
	// recovered: reinstated once; set under the key shard lock too, so it
	// may be read under either.
	recovered bool
	// ino is, for rootKept without a handle, the forgotten inode whose
	// table pin the entry holds; for rootRecovered, the live inode.
	ino        *inode
	list       *rootList
	prev, next *heldRoot
}

// identity names the kind of identity for logs.
func (h *heldRoot) identity() string {
	if h.handle != nil {
		return "file handle"
	}
	return "descriptor"
}

// rootList is a list of held roots, oldest first.
type rootList struct {
	head, tail *heldRoot
	n          int
}

func (l *rootList) push(h *heldRoot) {
	h.list, h.prev, h.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = h
	} else {
		l.head = h
	}
	l.tail = h
	l.n++
}

func (l *rootList) remove(h *heldRoot) {
	if h.list != l {
		return
	}
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		l.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		l.tail = h.prev
	}
	h.list, h.prev, h.next = nil, nil, nil
	l.n--
}
