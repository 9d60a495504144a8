package passthroughfs

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
	recovered := h.state == rootRecovered
	if !recovered && h.state != rootKept {
		r.mu.Unlock()
		ks.mu.Unlock()
		return
	}
	unpin := r.staleLocked(h)
	r.mu.Unlock()
	if recovered {
		r.t.unlinkLocked(ks, unpin)
	}
	ks.mu.Unlock()
	r.staleDone(h, unpin, "its directory left the share")
}
