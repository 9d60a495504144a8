package passthroughfs

import (
	"syscall"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

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
		unpin := r.staleLocked(h)
		r.mu.Unlock()
		ks.mu.Unlock()
		r.staleDone(h, unpin, "its directory is gone from the share or was replaced")
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
	r.t.insertLocked(ks, h.key, h.nodeid, ino)
	ino.pins.Add(1)
	ks.mu.Unlock()

	r.log.WithFields(log.Fields{"nodeid": h.nodeid, "path": "/" + h.path, "identity": h.identity(), "recoveries": n}).
		Info("submount root recovery: the guest used a submount root it had forgotten (guest kernel lacks Linux c4d361f66ac9); reinstated it")
	r.evict(ev)
	r.signal()
	return ino, 0, false
}
