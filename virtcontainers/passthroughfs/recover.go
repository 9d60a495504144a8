package passthroughfs

import (
	"bytes"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

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
// the FS. Their JSON form is part of the status file (see Status).
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

// recoveryTable holds the forgotten submount roots of one FS.
type recoveryTable struct {
	t         *inodeTable
	max       int
	noHandles bool
	// beforeReinstate: RecoverOptions.beforeReinstate.
	beforeReinstate func()
	log             *log.Entry
	report          func(RecoveryStats)
	// rootFD is the shared directory, rootPath its name as /proc/self/fd
	// shows it, procFD an open /proc/self/fd.
	rootFD   int
	rootPath string
	procFD   int

	mu        sync.Mutex
	byID      map[uint64]*heldRoot   // every node ID held and not dead
	byKey     map[inodeKey]*heldRoot // rootKept
	kept      rootList               // rootKept and rootStale
	recovered rootList
	fdKept    int // rootKept entries that hold a descriptor
	stats     RecoveryStats

	wake     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

func newRecoveryTable(o *RecoverOptions, l *log.Entry) *recoveryTable {
	r := &recoveryTable{
		max:             o.MaxHeld,
		noHandles:       o.noHandles,
		beforeReinstate: o.beforeReinstate,
		log:             l,
		report:          o.Report,
		rootFD:          -1,
		procFD:          -1,
		byID:            make(map[uint64]*heldRoot),
		byKey:           make(map[inodeKey]*heldRoot),
		wake:            make(chan struct{}, 1),
		stop:            make(chan struct{}),
		stopped:         make(chan struct{}),
	}
	if r.max <= 0 {
		r.max = DefaultMaxHeld
	}
	return r
}

// start runs the goroutine that reports counters and sweeps descriptors.
func (r *recoveryTable) start() {
	go func() {
		defer close(r.stopped)
		tick := time.NewTicker(sweepInterval)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-r.wake:
				r.publish()
			case <-tick.C:
				r.sweep()
			}
		}
	}()
}

// close stops the goroutine and reports the final counters, once.
func (r *recoveryTable) close() {
	if r == nil {
		return
	}
	r.stopOnce.Do(func() {
		close(r.stop)
		<-r.stopped
		s := r.Stats()
		r.log.WithFields(log.Fields{
			"recoveries": s.Recoveries, "forgotten": s.Forgotten, "relooked": s.Relooked,
			"stale": s.Stale, "evicted": s.Evicted, "held": s.Held,
		}).Info("submount root recovery: totals at exit")
		if r.report != nil {
			r.report(s)
		}
	})
}

// signal asks the goroutine to report the counters.
func (r *recoveryTable) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recoveryTable) publish() {
	if r.report != nil {
		r.report(r.Stats())
	}
}

// Stats returns the counters now.
func (r *recoveryTable) Stats() RecoveryStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Held = r.kept.n + r.recovered.n
	s.HeldByFD = r.fdKept + r.recovered.n
	s.MaxHeld = r.max
	return s
}

// evictions is what trimming the table left to do without its lock.
type evictions struct {
	unpin []*inode    // table pins of dropped entries
	live  []*heldRoot // recovered roots to take out of the inode table
}

// trimLocked drops the longest-held entries over the bound: forgotten (and
// stale) ones first, recovered ones only when no other is left.
func (r *recoveryTable) trimLocked(ev *evictions) {
	for r.kept.n+r.recovered.n > r.max {
		if h := r.kept.head; h != nil {
			r.kept.remove(h)
			delete(r.byID, h.nodeid)
			if h.state == rootKept {
				r.forgetKeyLocked(h)
				if h.ino != nil {
					ev.unpin = append(ev.unpin, h.ino)
					h.ino = nil
					r.fdKept--
				}
			}
			h.state = rootEvicted
			r.stats.Evicted++
			continue
		}
		h := r.recovered.head
		r.recovered.remove(h)
		h.state = rootEvicted
		r.stats.Evicted++
		ev.live = append(ev.live, h)
	}
}

// forgetKeyLocked takes a rootKept entry out of the key index.
func (r *recoveryTable) forgetKeyLocked(h *heldRoot) {
	if r.byKey[h.key] == h {
		delete(r.byKey, h.key)
		r.t.keyShard(h.key).held.Add(-1)
	}
}

// evict finishes trimLocked's work with no lock held.
func (r *recoveryTable) evict(ev evictions) {
	if r == nil || (ev.unpin == nil && ev.live == nil) {
		return
	}
	for _, ino := range ev.unpin {
		ino.release()
	}
	for _, h := range ev.live {
		ks := r.t.keyShard(h.key)
		ks.mu.Lock()
		r.mu.Lock()
		ino := h.ino
		// A LOOKUP may have given the guest a lookup on it meanwhile
		// (rootLive): then it is the guest's again.
		drop := h.state == rootEvicted && ino != nil && ino.owned
		if drop {
			h.ino = nil
			if r.byID[h.nodeid] == h {
				delete(r.byID, h.nodeid)
			}
		}
		r.mu.Unlock()
		if drop {
			r.t.unlinkLocked(ks, ino)
		}
		ks.mu.Unlock()
		if drop {
			ino.release()
			r.log.WithFields(log.Fields{"nodeid": h.nodeid, "path": "/" + h.path, "max_held": r.max}).
				Warn("submount root recovery: table full, dropped a recovered root; the guest gets EBADF on it")
		}
	}
	r.signal()
}

// unlinkLocked takes a live inode out of the tables; its key shard is held.
func (t *inodeTable) unlinkLocked(ks *keyShard, ino *inode) {
	ino.owned = false
	ino.gone = true
	if ks.m[ino.key] == ino {
		delete(ks.m, ino.key)
	}
	s := t.idShard(ino.nodeid)
	s.mu.Lock()
	if s.m[ino.nodeid] == ino {
		delete(s.m, ino.nodeid)
	}
	s.mu.Unlock()
}

// hold keeps the identity of ino, an announced submount root whose last
// lookup the guest just forgot; it is out of the inode table and its key
// shard ks is held. A node ID held before keeps its entry (and path). pinTaken
// reports that the entry took over the table's pin (no file handle: the
// descriptor is the identity).
func (r *recoveryTable) hold(ks *keyShard, ino *inode) (pinTaken bool, ev evictions) {
	h := ino.heldRoot()
	if h == nil {
		path, ok := r.pathOf(ino.fd)
		if !ok {
			r.log.WithField("nodeid", ino.nodeid).Debug("submount root recovery: forgotten root is not reachable in the share; not held")
			return false, ev
		}
		h = &heldRoot{nodeid: ino.nodeid, key: ino.key, handle: ino.handle(), path: path}
	}
	r.mu.Lock()
	if old := r.byKey[h.key]; old != nil && old != h {
		// Not reached: a LOOKUP of the key took the old entry before the
		// inode now forgotten existed. Drop it rather than hold two.
		r.kept.remove(old)
		delete(r.byID, old.nodeid)
		r.forgetKeyLocked(old)
		if old.ino != nil {
			ev.unpin = append(ev.unpin, old.ino)
			old.ino = nil
			r.fdKept--
		}
		old.state = rootEvicted
	}
	h.state = rootKept
	if h.handle == nil {
		h.ino = ino
		pinTaken = true
		r.fdKept++
	}
	r.byID[h.nodeid] = h
	r.byKey[h.key] = h
	ks.held.Add(1)
	r.kept.push(h)
	r.stats.Forgotten++
	r.trimLocked(&ev)
	r.mu.Unlock()
	r.signal()
	return pinTaken, ev
}

// revive gives a LOOKUP of key, which has no live inode, the entry held for
// key, if it is the same host file (fh is the file handle LOOKUP found, if
// any); the caller creates the inode under h.nodeid with h as its root. The
// key shard ks is held. unpin is a pin the caller must release.
func (r *recoveryTable) revive(ks *keyShard, key inodeKey, fh *fileHandle) (h *heldRoot, unpin *inode) {
	r.mu.Lock()
	h = r.byKey[key]
	if h == nil {
		r.mu.Unlock()
		return nil, nil
	}
	r.forgetKeyLocked(h)
	if h.ino != nil {
		unpin = h.ino
		h.ino = nil
		r.fdKept--
	}
	if h.handle != nil && !h.handle.equal(fh) {
		// The same (st_dev, st_ino, mount ID) on another file: all three
		// are reused by Linux. The held root is gone.
		h.state = rootStale
		r.stats.Stale++
		r.mu.Unlock()
		r.logStale(h, "its key names another file now")
		r.signal()
		return nil, unpin
	}
	r.kept.remove(h)
	h.state = rootLive
	r.stats.Relooked++
	r.mu.Unlock()
	r.signal()
	return h, unpin
}

// disown hands a recovered root back to the guest, which now holds a lookup
// on it. Its key shard is held.
func (r *recoveryTable) disown(h *heldRoot) {
	r.mu.Lock()
	if h.state == rootRecovered {
		r.recovered.remove(h)
	}
	// From rootEvicted too: evict has not taken it out yet and now must not.
	h.state = rootLive
	r.byID[h.nodeid] = h
	r.mu.Unlock()
}

// own takes back a recovered root whose last lookup the guest forgot: it
// stays live for the guest's submount, which holds none. Its key shard is
// held and inode.owned already set.
func (r *recoveryTable) own(h *heldRoot) (ev evictions) {
	r.mu.Lock()
	h.state = rootRecovered
	r.recovered.push(h)
	r.trimLocked(&ev)
	r.mu.Unlock()
	r.signal()
	return ev
}

// reinstateAttempts bounds how often a request on a forgotten root checks the
// host outside the locks before it checks under them.
const reinstateAttempts = 4

// recoverInode serves a request on nodeid, which the inode table did not
// know a moment ago: a held root is reinstated if the host still shows it, a
// stale one answers ESTALE, anything else EBADF. The inode comes back pinned.
func (fs *FS) recoverInode(nodeid uint64) (*inode, syscall.Errno) {
	r := fs.rec
	// A LOOKUP or FORGET of the same root may move it between the tables
	// while the host is checked outside the locks; each retry needs such a
	// move by the guest, and the last attempt checks under the key shard
	// lock, where none can happen, so a busy parent superblock cannot starve
	// the submount's request.
	for attempt := 0; ; attempt++ {
		last := attempt == reinstateAttempts-1
		r.mu.Lock()
		h := r.byID[nodeid]
		if h == nil {
			r.mu.Unlock()
			return nil, syscall.EBADF
		}
		state, pinned := h.state, (*inode)(nil)
		if state == rootKept && h.ino != nil {
			pinned = h.ino
			pinned.pins.Add(1)
		}
		r.mu.Unlock()
		if state == rootStale {
			if pinned != nil {
				pinned.release()
			}
			return nil, syscall.ESTALE
		}
		fd, same := -1, false
		if state == rootKept && !last {
			fd, same = r.verify(h, pinned)
		}
		if r.beforeReinstate != nil {
			r.beforeReinstate()
		}
		ino, e, retry := r.reinstate(h, state, pinned, fd, same, last)
		if pinned != nil {
			pinned.release()
		}
		if !retry {
			return ino, e
		}
	}
}

// reinstate decides, under h's key shard lock and the table's, what a
// request on h's node ID gets; saw is the state recoverInode saw, and for
// rootKept, pinned, fd and same are its check of the host. It takes fd.
// Where that check is out of date it asks for a retry, or, on the last
// attempt, checks the host itself with the key shard lock held.
func (r *recoveryTable) reinstate(h *heldRoot, saw rootState, pinned *inode, fd int, same, last bool) (*inode, syscall.Errno, bool) {
	defer func() { closeFD(fd) }()
	ks := r.t.keyShard(h.key)
	ks.mu.Lock()
	if ino := ks.m[h.key]; ino != nil && ino.nodeid == h.nodeid {
		// Live already: looked up again, or reinstated by another request.
		ino.pins.Add(1)
		ks.mu.Unlock()
		return ino, 0, false
	}
	r.mu.Lock()
	for checked := false; ; checked = true {
		switch {
		case r.byID[h.nodeid] != h || h.state == rootEvicted:
			r.mu.Unlock()
			ks.mu.Unlock()
			return nil, syscall.EBADF, false
		case h.state == rootStale:
			r.mu.Unlock()
			ks.mu.Unlock()
			return nil, syscall.ESTALE, false
		case h.state != rootKept:
			// Live states have their inode in ks.m; not reached.
			r.mu.Unlock()
			ks.mu.Unlock()
			return nil, syscall.EBADF, false
		}
		if checked || (!last && saw == rootKept && h.ino == pinned) {
			break
		}
		// Forgotten again since recoverInode looked: check anew.
		if !last {
			r.mu.Unlock()
			ks.mu.Unlock()
			return nil, 0, true
		}
		// Last attempt: check the host here. Under ks.mu only the bound or
		// clear can still move h, both to rootEvicted, which the switch
		// above sees.
		pinned = h.ino
		if pinned != nil {
			pinned.pins.Add(1)
			defer pinned.release()
		}
		r.mu.Unlock()
		closeFD(fd)
		fd, same = r.verify(h, pinned)
		r.mu.Lock()
	}
	if !same || ks.m[h.key] != nil {
		// A live inode with the key cannot exist while the key is held
		// (LOOKUP takes the entry first); refuse rather than alias it.
		r.forgetKeyLocked(h)
		unpin := h.ino
		if unpin != nil {
			h.ino = nil
			r.fdKept--
		}
		h.state = rootStale
		r.stats.Stale++
		r.mu.Unlock()
		ks.mu.Unlock()
		if unpin != nil {
			unpin.release()
		}
		r.logStale(h, "its directory is gone from the share or was replaced")
		r.signal()
		return nil, syscall.ESTALE, false
	}
	r.forgetKeyLocked(h)
	r.kept.remove(h)
	ino := h.ino
	if ino != nil {
		// Held by descriptor: the very inode comes back.
		r.fdKept--
		ino.gone = false
		ino.lookups = 0
	} else {
		ino = &inode{nodeid: h.nodeid, key: h.key, fd: fd, mode: unix.S_IFDIR, submount: true}
		ino.pins.Store(1)
		fd = -1
	}
	ino.setSub(h.handle, h)
	ino.owned = true
	h.ino = ino
	h.state = rootRecovered
	h.recovered = true
	r.recovered.push(h)
	r.stats.Recoveries++
	n := r.stats.Recoveries
	var ev evictions
	r.trimLocked(&ev)
	r.mu.Unlock()
	ks.m[h.key] = ino
	s := r.t.idShard(h.nodeid)
	s.mu.Lock()
	s.m[h.nodeid] = ino
	s.mu.Unlock()
	ino.pins.Add(1)
	ks.mu.Unlock()

	r.log.WithFields(log.Fields{"nodeid": h.nodeid, "path": "/" + h.path, "identity": h.identity(), "recoveries": n}).
		Info("submount root recovery: the guest used a submount root it had forgotten (guest kernel lacks Linux c4d361f66ac9); reinstated it")
	r.evict(ev)
	r.signal()
	return ino, 0, false
}

func (r *recoveryTable) logStale(h *heldRoot, why string) {
	r.log.WithFields(log.Fields{"nodeid": h.nodeid, "path": "/" + h.path}).
		Warn("submount root recovery: forgotten root not recovered, " + why + "; its node ID answers ESTALE")
}

// verify reports whether the share still shows h's directory at h's path.
// For an entry with a file handle it returns the descriptor it opened there
// (the caller closes it); pinned is the inode an entry without one holds.
func (r *recoveryTable) verify(h *heldRoot, pinned *inode) (int, bool) {
	if h.handle == nil && pinned == nil {
		return -1, false
	}
	var cn [unix.PathMax + 1]byte
	if len(h.path) >= len(cn) {
		return -1, false
	}
	copy(cn[:], h.path)
	fd, e := openResolve(r.rootFD, &cn[0], unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW,
		unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
	if e != 0 {
		return -1, false
	}
	var st unix.Statx_t
	if fstatx(fd, &st) != 0 || keyOf(&st) != h.key || st.Nlink == 0 {
		closeFD(fd)
		return -1, false
	}
	if h.handle != nil {
		if !h.handle.equal(handleOf(fd)) {
			closeFD(fd)
			return -1, false
		}
		return fd, true
	}
	// The held descriptor pins the inode, so the key names no other file;
	// the path reaching the key proves it is still in the share.
	closeFD(fd)
	if fstatx(pinned.fd, &st) != 0 || keyOf(&st) != h.key || st.Nlink == 0 {
		return -1, false
	}
	return -1, true
}

// sweep drops the entries holding a descriptor whose directory has left the
// share (a removed volume or container rootfs must not stay pinned), and
// takes recovered roots that left it out of the inode table.
func (r *recoveryTable) sweep() {
	type check struct {
		h      *heldRoot
		pinned *inode
	}
	var checks []check
	r.mu.Lock()
	for h := r.kept.head; h != nil; h = h.next {
		if h.state == rootKept && h.ino != nil {
			h.ino.pins.Add(1)
			checks = append(checks, check{h, h.ino})
		}
	}
	for h := r.recovered.head; h != nil; h = h.next {
		h.ino.pins.Add(1)
		checks = append(checks, check{h, h.ino})
	}
	r.mu.Unlock()
	for _, c := range checks {
		fd, same := r.verify(c.h, c.pinned)
		closeFD(fd)
		if !same {
			r.markStale(c.h)
		}
		c.pinned.release()
	}
}

// markStale drops the descriptor of a kept or recovered root found gone and
// leaves a tombstone that answers ESTALE.
func (r *recoveryTable) markStale(h *heldRoot) {
	ks := r.t.keyShard(h.key)
	ks.mu.Lock()
	r.mu.Lock()
	var unpin, live *inode
	switch h.state {
	case rootKept:
		r.forgetKeyLocked(h)
		if h.ino != nil {
			unpin = h.ino
			h.ino = nil
			r.fdKept--
		}
	case rootRecovered:
		live = h.ino
		h.ino = nil
		r.recovered.remove(h)
		r.kept.push(h)
	default:
		r.mu.Unlock()
		ks.mu.Unlock()
		return
	}
	h.state = rootStale
	r.stats.Stale++
	r.mu.Unlock()
	if live != nil {
		r.t.unlinkLocked(ks, live)
		unpin = live
	}
	ks.mu.Unlock()
	if unpin != nil {
		unpin.release()
	}
	r.logStale(h, "its directory left the share")
	r.signal()
}

// clear drops every entry, after the inode table dropped its inodes (DESTROY,
// a second INIT, Close). The counters stay.
func (r *recoveryTable) clear(t *inodeTable) {
	if r == nil {
		return
	}
	var unpin []*inode
	r.mu.Lock()
	for _, l := range []*rootList{&r.kept, &r.recovered} {
		for h := l.head; h != nil; {
			next := h.next
			if h.state == rootKept && h.ino != nil {
				unpin = append(unpin, h.ino)
			}
			h.ino, h.state = nil, rootEvicted
			l.remove(h)
			h = next
		}
	}
	clear(r.byID)
	clear(r.byKey)
	r.fdKept = 0
	for i := range t.byKey {
		t.byKey[i].held.Store(0)
	}
	r.mu.Unlock()
	for _, ino := range unpin {
		ino.release()
	}
	r.signal()
}

// pathOf names the directory open at fd relative to the shared directory,
// as /proc/self/fd shows it; false if it is not inside.
func (r *recoveryTable) pathOf(fd int) (string, bool) {
	p, ok := readFDLink(r.procFD, fd)
	if !ok {
		return "", false
	}
	var rel string
	if r.rootPath == "/" {
		rel = strings.TrimPrefix(p, "/")
	} else if strings.HasPrefix(p, r.rootPath+"/") {
		rel = p[len(r.rootPath)+1:]
	}
	if rel == "" || !strings.HasPrefix(p, "/") {
		return "", false
	}
	// Not a slice of p: the entry keeps only its own bytes.
	return strings.Clone(rel), true
}

// readFDLink reads /proc/self/fd/<fd>.
func readFDLink(procFD, fd int) (string, bool) {
	var n fdName
	buf := make([]byte, unix.PathMax)
	for {
		r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(procFD), uintptr(unsafe.Pointer(n.set(fd))),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || int(r) >= len(buf) {
			return "", false
		}
		return string(buf[:r]), true
	}
}

// openResolve is openat2 with the resolve flags given.
func openResolve(dirfd int, name *byte, flags int, resolve uint64) (int, syscall.Errno) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve}
	r, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

func (h *fileHandle) equal(o *fileHandle) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.mountID == o.mountID && h.fh.Type() == o.fh.Type() && bytes.Equal(h.fh.Bytes(), o.fh.Bytes())
}
