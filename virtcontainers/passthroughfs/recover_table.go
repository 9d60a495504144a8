package passthroughfs

import (
	"sync"
	"time"

	"github.com/containerd/log"
)

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
				if unpin := r.unkeyLocked(h); unpin != nil {
					ev.unpin = append(ev.unpin, unpin)
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

// unkeyLocked takes a rootKept entry out of the key index and returns the
// table pin it held (no file handle), which the caller releases with no
// lock held.
func (r *recoveryTable) unkeyLocked(h *heldRoot) (unpin *inode) {
	r.forgetKeyLocked(h)
	unpin, h.ino = h.ino, nil
	if unpin != nil {
		r.fdKept--
	}
	return unpin
}

// staleLocked makes h, kept or recovered, a tombstone that answers ESTALE:
// every way a held root is found gone from the host ends here. It stays in
// the kept list until the bound or clear drops it. r.mu and h's key shard
// are held. It returns the inode h held, a kept root's table pin or a
// recovered root's live inode, which the caller takes out of the inode
// table (recovered) and hands to staleDone.
func (r *recoveryTable) staleLocked(h *heldRoot) *inode {
	var ino *inode
	switch h.state {
	case rootKept:
		ino = r.unkeyLocked(h)
	case rootRecovered:
		ino, h.ino = h.ino, nil
		r.recovered.remove(h)
		r.kept.push(h)
	}
	h.state = rootStale
	r.stats.Stale++
	return ino
}

// staleDone finishes staleLocked with r.mu released: it releases the pin,
// says why the root was not recovered, and reports the counters.
func (r *recoveryTable) staleDone(h *heldRoot, unpin *inode, why string) {
	if unpin != nil {
		unpin.release()
	}
	r.log.WithFields(log.Fields{"nodeid": h.nodeid, "path": "/" + h.path}).
		Warn("submount root recovery: forgotten root not recovered, " + why + "; its node ID answers ESTALE")
	r.signal()
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
		if unpin := r.unkeyLocked(old); unpin != nil {
			ev.unpin = append(ev.unpin, unpin)
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
	if h.handle != nil && !h.handle.equal(fh) {
		// The same (st_dev, st_ino, mount ID) on another file: all three
		// are reused by Linux. The held root is gone. (An entry with a
		// file handle holds no pin: nothing to release.)
		unpin := r.staleLocked(h)
		r.mu.Unlock()
		r.staleDone(h, unpin, "its key names another file now")
		return nil, nil
	}
	unpin = r.unkeyLocked(h)
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
