package passthroughfs

import (
	"sync"
	"sync/atomic"
)

// handle is an open file or directory of the guest (a FUSE file handle).
type handle struct {
	fd     int
	nodeid uint64
	// appendMode: the guest opened with O_APPEND, which is not passed to the
	// host descriptor (mmap and fcntl(F_SETFL) would break it); plain writes
	// append with RWF_APPEND instead, as virtiofsd does.
	appendMode bool
	// refs counts the table's reference plus requests in flight.
	refs atomic.Int32
	dir  *dirStream // directories only
}

func (h *handle) release() {
	if h.refs.Add(-1) == 0 {
		closeFD(h.fd)
	}
}

type handleShard struct {
	mu   sync.RWMutex
	m    map[uint64]*handle
	peak int // the most entries m held since it was made (compact.go)
	_    [32]byte
}

// handleTable maps FUSE file handles to open descriptors.
type handleTable struct {
	next   atomic.Uint64
	shards [shards]handleShard
}

func newHandleTable() *handleTable {
	t := &handleTable{}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*handle)
	}
	return t
}

func (t *handleTable) shard(fh uint64) *handleShard { return &t.shards[fh&(shards-1)] }

// add registers h and returns its file handle.
func (t *handleTable) add(h *handle) uint64 {
	h.refs.Store(1)
	fh := t.next.Add(1)
	s := t.shard(fh)
	s.mu.Lock()
	s.m[fh] = h
	grown(&s.peak, len(s.m))
	s.mu.Unlock()
	return fh
}

// get returns the handle fh of nodeid, referenced, or nil: a handle used with
// another node than it was opened on is as unknown as a bogus one.
func (t *handleTable) get(fh, nodeid uint64) *handle {
	s := t.shard(fh)
	s.mu.RLock()
	h := s.m[fh]
	if h != nil {
		if h.nodeid != nodeid {
			h = nil
		} else {
			h.refs.Add(1)
		}
	}
	s.mu.RUnlock()
	return h
}

// remove takes fh of nodeid out of the table and drops the table's
// reference; the descriptor closes when the last request using it is done.
func (t *handleTable) remove(fh, nodeid uint64) bool {
	s := t.shard(fh)
	s.mu.Lock()
	h := s.m[fh]
	if h == nil || h.nodeid != nodeid {
		s.mu.Unlock()
		return false
	}
	delete(s.m, fh)
	s.mu.Unlock()
	h.release()
	return true
}

func (t *handleTable) clear() {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for fh, h := range s.m {
			delete(s.m, fh)
			h.release()
		}
		s.mu.Unlock()
	}
}
