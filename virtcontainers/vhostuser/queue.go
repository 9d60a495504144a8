package vhostuser

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/log"
)

type atomicTable = atomic.Pointer[memTable]

// queue is one virtqueue. Its configuration fields belong to the goroutine
// running Backend.Serve; once started, nextAvail belongs to the queue's
// dispatch goroutine and nextUsed to whoever holds usedMu.
type queue struct {
	index  int
	b      *Backend
	inline bool

	num     uint16
	addrs   ringAddrs
	addrSet bool
	enabled bool
	kick    *os.File
	call    atomic.Pointer[os.File]

	features atomic.Uint64

	running  bool
	run      *queueRun
	inflight sync.WaitGroup

	nextAvail uint16

	usedMu   sync.Mutex
	nextUsed uint16

	fence atomic.Int32
	one   [8]byte
	pool  sync.Pool
}

func (q *queue) reset() {
	q.num, q.addrs, q.addrSet, q.enabled = 0, ringAddrs{}, false, false
	q.nextAvail, q.nextUsed = 0, 0
	q.features.Store(0)
}

func (q *queue) closeFDs() {
	if q.kick != nil {
		_ = q.kick.Close()
		q.kick = nil
	}
	if c := q.call.Swap(nil); c != nil {
		_ = c.Close()
	}
}

// queueRun is one start of a queue's dispatcher; a dispatcher that outlives
// a bounded stop keeps its own stop flag.
type queueRun struct {
	stopping atomic.Bool
	done     chan struct{}
}

func (q *queue) start(ctx context.Context) {
	q.one[0] = 1
	q.running = true
	q.run = &queueRun{done: make(chan struct{})}
	_ = q.kick.SetReadDeadline(time.Time{})
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("queue", q.index))
	go q.dispatch(ctx, q.kick, q.run)
	log.G(ctx).Debug("virtqueue started")
}

// stop ends the dispatch goroutine and waits (bounded) for the requests it
// handed out; nextAvail is then final.
func (q *queue) stop(ctx context.Context) {
	if !q.running {
		return
	}
	q.run.stopping.Store(true)
	_ = q.kick.SetReadDeadline(time.Unix(1, 0))
	q.running = false
	// The dispatcher may wait for a free worker, and workers for slow file
	// operations: bound the wait so the frontend is not blocked for ever.
	drained := make(chan struct{})
	go func(done chan struct{}) { <-done; q.inflight.Wait(); close(drained) }(q.run.done)
	select {
	case <-drained:
	case <-time.After(q.b.cfg.DrainTimeout):
		log.G(ctx).WithField("queue", q.index).Warn("virtqueue stopped with requests still in flight")
	}
}

func (q *queue) dispatch(ctx context.Context, kick *os.File, run *queueRun) {
	defer close(run.done)
	var buf [8]byte
	for {
		if !q.drain(ctx, run) {
			return
		}
		if _, err := kick.Read(buf[:]); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
				log.G(ctx).WithError(err).Error("virtqueue kick")
			}
			return
		}
	}
}

// drain hands out every available chain. It returns false when the queue
// must stop: asked to, or the guest broke the ring.
func (q *queue) drain(ctx context.Context, run *queueRun) bool {
	t := q.b.mem.acquire()
	if t == nil {
		log.G(ctx).Error("virtqueue: no guest memory")
		return false
	}
	defer t.unref()
	features := q.features.Load()
	eventIdx := features&FeatureRingEventIdx != 0
	r, err := translateRings(t, q.addrs, q.num, eventIdx)
	if err != nil {
		log.G(ctx).WithError(err).Error("virtqueue rings")
		return false
	}
	lim := q.b.dev.Limits()
	indirect := features&FeatureRingIndirectDesc != 0
	for !run.stopping.Load() {
		avail := r.availIdx()
		if avail == q.nextAvail {
			if !eventIdx {
				return true
			}
			r.setAvailEvent(q.nextAvail)
			q.fence.Add(1) // store-load fence before the re-check
			if r.availIdx() == q.nextAvail {
				return true
			}
			continue
		}
		if uint16(avail-q.nextAvail) > q.num {
			log.G(ctx).WithField("avail_idx", avail).WithField("next_avail", q.nextAvail).Error("virtqueue: guest made more buffers available than the ring holds; queue stopped")
			return false
		}
		head := r.availEntry(q.nextAvail)
		if head >= q.num {
			log.G(ctx).WithField("head", head).Error("virtqueue: chain head outside the descriptor table; queue stopped")
			return false
		}
		q.nextAvail++
		c, _ := q.pool.Get().(*Chain)
		if c == nil {
			c = &Chain{}
		}
		c.table = t
		c.rings = r
		t.refs.Add(1) // the chain's own reference
		q.inflight.Add(1)
		if err := walkChain(t, r.desc, q.num, head, indirect, lim, c); err != nil {
			log.G(ctx).WithError(err).WithField("head", head).Warn("virtqueue: bad descriptor chain; returned unused")
			q.complete(ctx, c, 0)
			continue
		}
		if q.inline || q.b.jobs == nil {
			q.serve(ctx, c)
		} else {
			q.b.jobs <- job{q: q, c: c}
		}
	}
	return false
}

// signal writes the call eventfd. The frontend may swap it concurrently
// (QEMU does when the guest masks the interrupt): a write that meets a closed
// file retries on the new one so no interrupt is lost.
func (q *queue) signal(ctx context.Context) {
	for range 3 {
		call := q.call.Load()
		if call == nil {
			return
		}
		_, err := call.Write(q.one[:])
		if err == nil {
			return
		}
		if !errors.Is(err, os.ErrClosed) {
			log.G(ctx).WithError(err).Warn("virtqueue: signal guest")
			return
		}
	}
}

func (q *queue) serve(ctx context.Context, c *Chain) {
	n := q.b.dev.Handle(ctx, q.index, c)
	q.complete(ctx, c, n)
}

// complete returns c to the guest with n bytes written and signals the
// guest if it asked for it.
func (q *queue) complete(ctx context.Context, c *Chain, n uint32) {
	r := &c.rings
	q.usedMu.Lock()
	old := q.nextUsed
	r.putUsed(old, c.Head, n)
	q.nextUsed++
	r.publishUsed(q.nextUsed)
	var notify bool
	if r.eventIdx {
		notify = vringNeedEvent(r.usedEvent(), q.nextUsed, old)
	} else {
		notify = r.availFlags()&availFlagNoIntr == 0
	}
	q.usedMu.Unlock()
	if notify {
		q.signal(ctx)
	}
	c.table.unref()
	c.table = nil
	c.rings = rings{}
	q.pool.Put(c)
	q.inflight.Done()
}
