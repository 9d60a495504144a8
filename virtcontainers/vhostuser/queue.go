package vhostuser

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
)

type atomicTable = atomic.Pointer[memTable]

// queue is one virtqueue. Its fields belong to the goroutine running
// Backend.Serve; what a started queue's dispatcher and requests use belongs
// to its queueRun, so a run that outlives a bounded stop cannot touch the
// queue's next configuration.
type queue struct {
	index  int
	b      *Backend
	inline bool

	num      uint16
	addrs    ringAddrs
	addrSet  bool
	enabled  bool
	features uint64
	kick     *os.File
	call     atomic.Pointer[os.File]

	// run is the current run, nil while the queue is stopped.
	run *queueRun
	// nextAvail and nextUsed are where the next run starts (SET_VRING_BASE,
	// or where the last run stopped).
	nextAvail, nextUsed uint16

	one  [8]byte
	pool sync.Pool
	// warn limits the warnings the guest can trigger on this queue.
	warn WarnLimiter
}

func (q *queue) reset() {
	q.num, q.addrs, q.addrSet, q.enabled = 0, ringAddrs{}, false, false
	q.nextAvail, q.nextUsed = 0, 0
	q.features = 0
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

// queueRun is one start of a queue: its ring layout, its position in the
// rings and the requests it handed out. Requests complete through their own
// run; once the run is abandoned (stopped, drained or not) a late completion
// only drops its memory reference and never writes a used ring the frontend
// may since have moved or reset.
type queueRun struct {
	num      uint16
	addrs    ringAddrs
	features uint64

	stopping atomic.Bool
	// done is closed when the dispatcher returns; abandon when stop gave up
	// on the run (a dispatcher waiting for a worker then drops its chain).
	done, abandon chan struct{}
	inflight      sync.WaitGroup
	fence         atomic.Int32

	mu        sync.Mutex
	abandoned bool
	nextAvail uint16 // written by the dispatcher under mu
	nextUsed  uint16
}

// running reports whether the queue has a run.
func (q *queue) running() bool { return q.run != nil }

func (q *queue) start(ctx context.Context) {
	q.one[0] = 1
	r := &queueRun{
		num: q.num, addrs: q.addrs, features: q.features,
		done: make(chan struct{}), abandon: make(chan struct{}),
		nextAvail: q.nextAvail, nextUsed: q.nextUsed,
	}
	q.run = r
	_ = q.kick.SetReadDeadline(time.Time{})
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("queue", q.index))
	if q.inline || q.b.jobs == nil {
		go q.dispatch(ctx, q.kick, r)
	} else {
		q.b.dispatchers.Add(1)
		go func() { defer q.b.dispatchers.Done(); q.dispatch(ctx, q.kick, r) }()
	}
	log.G(ctx).Debug("virtqueue started")
}

// stop ends the run: the dispatcher stops taking chains and stop waits
// (bounded) for the requests it handed out. Either way the run is then
// abandoned and nextAvail and nextUsed are final: requests still in flight
// after the timeout are lost to the guest, which resets or stops the queue.
func (q *queue) stop(ctx context.Context) {
	r := q.run
	if r == nil {
		return
	}
	q.run = nil
	r.stopping.Store(true)
	_ = q.kick.SetReadDeadline(time.Unix(1, 0))
	// The dispatcher may wait for a free worker, and workers for slow file
	// operations: bound the wait so the frontend is not blocked for ever.
	drained := make(chan struct{})
	go func() { <-r.done; r.inflight.Wait(); close(drained) }()
	timer := time.NewTimer(q.b.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		log.G(ctx).WithField("queue", q.index).Warn("virtqueue stopped with requests still in flight; their replies will be dropped")
	}
	r.mu.Lock()
	r.abandoned = true
	q.nextAvail, q.nextUsed = r.nextAvail, r.nextUsed
	r.mu.Unlock()
	close(r.abandon)
}

func (q *queue) dispatch(ctx context.Context, kick *os.File, r *queueRun) {
	defer close(r.done)
	var buf [8]byte
	for {
		if !q.drain(ctx, r) {
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

// drain hands out every available chain. It returns false when the run
// must end: asked to, or the guest broke the ring.
func (q *queue) drain(ctx context.Context, r *queueRun) bool {
	for {
		more, ok := q.drainTable(ctx, r)
		if !more {
			return ok
		}
	}
}

// drainTable is drain through one memory table. It stops early (more) when
// the frontend replaces the table, so that a queue the guest keeps busy
// translates its next chains through the new one.
func (q *queue) drainTable(ctx context.Context, r *queueRun) (more, ok bool) {
	t := q.b.mem.acquire()
	if t == nil {
		log.G(ctx).Error("virtqueue: no guest memory")
		return false, false
	}
	defer t.unref()
	eventIdx := r.features&FeatureRingEventIdx != 0
	rg, err := translateRings(t, r.addrs, r.num, eventIdx)
	if err != nil {
		log.G(ctx).WithError(err).Error("virtqueue rings")
		return false, false
	}
	lim := q.b.dev.Limits()
	indirect := r.features&FeatureRingIndirectDesc != 0
	for !r.stopping.Load() {
		if q.b.mem.p.Load() != t {
			return true, true
		}
		avail := rg.availIdx()
		next := r.nextAvail
		if avail == next {
			if !eventIdx {
				return false, true
			}
			rg.setAvailEvent(next)
			r.fence.Add(1) // store-load fence before the re-check
			if rg.availIdx() == next {
				return false, true
			}
			continue
		}
		if uint16(avail-next) > r.num {
			log.G(ctx).WithField("avail_idx", avail).WithField("next_avail", next).Error("virtqueue: guest made more buffers available than the ring holds; queue stopped")
			return false, false
		}
		head := rg.availEntry(next)
		if head >= r.num {
			log.G(ctx).WithField("head", head).Error("virtqueue: chain head outside the descriptor table; queue stopped")
			return false, false
		}
		r.mu.Lock()
		if r.abandoned {
			r.mu.Unlock()
			return false, false
		}
		r.nextAvail++
		r.inflight.Add(1)
		r.mu.Unlock()
		c, _ := q.pool.Get().(*Chain)
		if c == nil {
			c = &Chain{}
		}
		c.table, c.rings, c.run = t, rg, r
		t.refs.Add(1) // the chain's own reference
		if err := walkChain(t, rg.desc, r.num, head, indirect, lim, c); err != nil {
			if ok, n := q.warn.Allow("bad descriptor chain"); ok {
				log.G(ctx).WithError(err).WithField("head", head).WithField("suppressed", n).Warn("virtqueue: bad descriptor chain; returned unused")
			}
			q.complete(ctx, c, 0)
			continue
		}
		if q.inline || q.b.jobs == nil {
			q.serve(ctx, c)
			continue
		}
		select {
		case q.b.jobs <- job{q: q, c: c}:
		case <-r.abandon:
			q.complete(ctx, c, 0) // dropped: the run is abandoned
			return false, false
		}
	}
	return false, false
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
// guest if it asked for it. A chain of an abandoned run is only released.
func (q *queue) complete(ctx context.Context, c *Chain, n uint32) {
	r := c.run
	rg := &c.rings
	var notify bool
	r.mu.Lock()
	if !r.abandoned {
		old := r.nextUsed
		rg.putUsed(old, c.Head, n)
		r.nextUsed++
		rg.publishUsed(r.nextUsed)
		notify = rg.needNotify(old, r.nextUsed)
	}
	r.mu.Unlock()
	if notify {
		q.signal(ctx)
	}
	c.table.unref()
	c.table, c.rings, c.run = nil, rings{}, nil
	q.pool.Put(c)
	r.inflight.Done()
}
