package vhostusertest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Descriptor flags.
const (
	DescNext     = 1
	DescWrite    = 2
	DescIndirect = 4
)

// Queue is the driver side of one split virtqueue laid out in guest memory.
type Queue struct {
	f                          *Frontend
	Index                      uint32
	Size                       uint16
	DescGPA, AvailGPA, UsedGPA uint64
	Kick, Call                 int

	mu        sync.Mutex
	free      []uint16
	availIdx  uint16
	lastUsed  uint16
	heapStart uint64
	heapEnd   uint64
	heapNext  uint64
	done      map[uint16]uint32
	// UseIndirect puts every chain in an indirect table.
	UseIndirect bool
}

// RingBytes is the guest memory SetupQueue needs for the rings of a queue of
// size entries (the rest of the area is the queue's buffer heap).
func RingBytes(size uint16) uint64 {
	n := uint64(size)
	return align(16*n, 4096) + align(6+2*n, 4096) + align(6+8*n, 4096)
}

func align(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// SetupQueue lays out queue index with size entries at guest address gpa,
// using [gpa, gpa+area) for rings and buffers, and configures it in the
// backend like QEMU's vhost_virtqueue_start.
func (f *Frontend) SetupQueue(index uint32, size uint16, gpa, area uint64) (*Queue, error) {
	q := &Queue{f: f, Index: index, Size: size}
	n := uint64(size)
	q.DescGPA = gpa
	q.AvailGPA = gpa + align(16*n, 4096)
	q.UsedGPA = q.AvailGPA + align(6+2*n, 4096)
	q.heapStart = q.UsedGPA + align(6+8*n, 4096)
	q.heapEnd = gpa + area
	q.heapNext = q.heapStart
	if q.heapStart >= q.heapEnd {
		return nil, fmt.Errorf("area 0x%x too small for queue of %d", area, size)
	}
	clear(f.Guest(gpa, q.heapStart-gpa))
	for i := range size {
		q.free = append(q.free, i)
	}
	var err error
	if q.Kick, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		return nil, err
	}
	if q.Call, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, err
	}
	if err := f.Do(SetVringNum, State(index, uint32(size))); err != nil {
		return nil, err
	}
	if err := f.Do(SetVringBase, State(index, 0)); err != nil {
		return nil, err
	}
	addr := binary.LittleEndian.AppendUint32(nil, index)
	addr = binary.LittleEndian.AppendUint32(addr, 0)
	addr = binary.LittleEndian.AppendUint64(addr, f.UserAddr(q.DescGPA))
	addr = binary.LittleEndian.AppendUint64(addr, f.UserAddr(q.UsedGPA))
	addr = binary.LittleEndian.AppendUint64(addr, f.UserAddr(q.AvailGPA))
	addr = binary.LittleEndian.AppendUint64(addr, 0)
	if err := f.Do(SetVringAddr, addr); err != nil {
		return nil, err
	}
	if err := f.Do(SetVringCall, U64(uint64(index)), q.Call); err != nil {
		return nil, err
	}
	if err := f.Do(SetVringKick, U64(uint64(index)), q.Kick); err != nil {
		return nil, err
	}
	if f.features&FeatureProtocol != 0 {
		if err := f.Do(SetVringEnable, State(index, 1)); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// Close releases the eventfds.
func (q *Queue) Close() {
	unix.Close(q.Kick)
	unix.Close(q.Call)
}

// Alloc returns guest memory for a buffer (a ring of memory: tests keep
// less than the heap in flight).
func (q *Queue) Alloc(n uint64) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.allocLocked(n)
}

func (q *Queue) allocLocked(n uint64) uint64 {
	n = align(max(n, 1), 64)
	if q.heapNext+n > q.heapEnd {
		q.heapNext = q.heapStart
	}
	if q.heapNext+n > q.heapEnd {
		panic("buffer larger than queue heap")
	}
	g := q.heapNext
	q.heapNext += n
	return g
}

// Desc is one descriptor to write.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// PutDesc writes descriptor i of the table at gpa.
func (q *Queue) PutDesc(tableGPA uint64, i uint16, d Desc) {
	b := q.f.Guest(tableGPA+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(b[0:], d.Addr)
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
}

// Publish makes head available and kicks the backend.
func (q *Queue) Publish(head uint16) {
	q.mu.Lock()
	slot := q.availIdx % q.Size
	binary.LittleEndian.PutUint16(q.f.Guest(q.AvailGPA+4+2*uint64(slot), 2), head)
	q.availIdx++
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.f.Guest(q.AvailGPA, 4)[0])), uint32(q.availIdx)<<16)
	q.mu.Unlock()
	q.KickNow()
}

func (q *Queue) lastUsedLocked() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastUsed
}

// KickNow signals the kick eventfd.
func (q *Queue) KickNow() {
	_, _ = unix.Write(q.Kick, U64(1))
}

// SetUsedEvent writes used_event (EVENT_IDX): interrupt once used passes v.
func (q *Queue) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.f.Guest(q.AvailGPA+4+2*uint64(q.Size), 2), v)
}

// AvailEvent reads avail_event (EVENT_IDX) as the backend wrote it.
func (q *Queue) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(q.f.Guest(q.UsedGPA+4+8*uint64(q.Size), 2))
}

// Used is one used ring element.
type Used struct {
	ID  uint16
	Len uint32
}

// UsedIdx reads used->idx.
func (q *Queue) UsedIdx() uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.f.Guest(q.UsedGPA, 4)[0]))) >> 16)
}

// Reap returns the used elements not seen yet.
func (q *Queue) Reap() []Used {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reapLocked()
}

func (q *Queue) reapLocked() []Used {
	var out []Used
	idx := q.UsedIdx()
	for q.lastUsed != idx {
		e := q.f.Guest(q.UsedGPA+4+8*uint64(q.lastUsed%q.Size), 8)
		out = append(out, Used{ID: uint16(binary.LittleEndian.Uint32(e)), Len: binary.LittleEndian.Uint32(e[4:])})
		q.lastUsed++
	}
	return out
}

// WaitCall waits up to d for the backend to signal the call eventfd.
func (q *Queue) WaitCall(d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(q.Call), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			var b [8]byte
			_, _ = unix.Read(q.Call, b[:])
			return true
		}
		if err != nil {
			return false
		}
	}
}

// Pending is a submitted request.
type Pending struct {
	Head     uint16
	Writable [][]byte
	descs    []uint16
}

// Submit builds a chain of readable buffers (copied into guest memory) and
// writable buffers of the given sizes, publishes it and kicks.
func (q *Queue) Submit(readable [][]byte, writable []int) (*Pending, error) {
	q.mu.Lock()
	total := len(readable) + len(writable)
	need := total
	if q.UseIndirect {
		need = 1
	}
	if len(q.free) < need || total == 0 {
		q.mu.Unlock()
		return nil, fmt.Errorf("queue %d: %d free descriptors, need %d", q.Index, len(q.free), need)
	}
	p := &Pending{}
	var ds []Desc
	for _, r := range readable {
		g := q.allocLocked(uint64(len(r)))
		copy(q.f.Guest(g, uint64(len(r))), r)
		ds = append(ds, Desc{Addr: g, Len: uint32(len(r))})
	}
	for _, n := range writable {
		g := q.allocLocked(uint64(n))
		clear(q.f.Guest(g, uint64(n)))
		p.Writable = append(p.Writable, q.f.Guest(g, uint64(n)))
		ds = append(ds, Desc{Addr: g, Len: uint32(n), Flags: DescWrite})
	}
	if q.UseIndirect {
		tbl := q.allocLocked(16 * uint64(len(ds)))
		for i := range ds {
			if i+1 < len(ds) {
				ds[i].Flags |= DescNext
				ds[i].Next = uint16(i + 1)
			}
			q.PutDesc(tbl, uint16(i), ds[i])
		}
		head := q.free[0]
		q.free = q.free[1:]
		q.PutDesc(q.DescGPA, head, Desc{Addr: tbl, Len: uint32(16 * len(ds)), Flags: DescIndirect})
		p.Head, p.descs = head, []uint16{head}
	} else {
		idx := q.free[:total]
		q.free = q.free[total:]
		for i := range ds {
			if i+1 < len(ds) {
				ds[i].Flags |= DescNext
				ds[i].Next = idx[i+1]
			}
			q.PutDesc(q.DescGPA, idx[i], ds[i])
		}
		p.Head, p.descs = idx[0], append([]uint16(nil), idx...)
	}
	q.mu.Unlock()
	q.Publish(p.Head)
	return p, nil
}

// Release returns a completed request's descriptors to the free list.
func (q *Queue) Release(p *Pending) {
	q.mu.Lock()
	q.free = append(q.free, p.descs...)
	q.mu.Unlock()
}

// Wait polls the used ring for the listed requests until all completed or
// d passed, and returns their used lengths by head. Several goroutines may
// wait on one queue: completions are handed to whoever submitted them.
func (q *Queue) Wait(d time.Duration, ps ...*Pending) (map[uint16]uint32, error) {
	got := map[uint16]uint32{}
	deadline := time.Now().Add(d)
	for {
		q.mu.Lock()
		if q.done == nil {
			q.done = map[uint16]uint32{}
		}
		for _, u := range q.reapLocked() {
			if _, dup := q.done[u.ID]; dup {
				q.mu.Unlock()
				return got, fmt.Errorf("queue %d: head %d used twice", q.Index, u.ID)
			}
			q.done[u.ID] = u.Len
		}
		for _, p := range ps {
			if n, ok := q.done[p.Head]; ok {
				got[p.Head] = n
			}
		}
		if len(got) == len(ps) {
			for _, p := range ps {
				delete(q.done, p.Head)
				q.free = append(q.free, p.descs...)
			}
			q.mu.Unlock()
			return got, nil
		}
		// With EVENT_IDX the device signals only when used->idx passes
		// used_event: ask for the next completion, then look once more
		// in case it landed before the request.
		eventIdx := q.f.features&FeatureEventIdx != 0
		if eventIdx {
			q.SetUsedEvent(q.lastUsed)
		}
		q.mu.Unlock()
		if time.Now().After(deadline) {
			return got, fmt.Errorf("queue %d: %d of %d requests completed in %v", q.Index, len(got), len(ps), d)
		}
		if eventIdx && q.UsedIdx() != q.lastUsedLocked() {
			continue
		}
		q.WaitCall(5 * time.Millisecond)
	}
}

// Do submits one request and waits for it: the bytes written to its
// writable buffers, concatenated.
func (q *Queue) Do(readable [][]byte, writable []int) ([]byte, error) {
	p, err := q.Submit(readable, writable)
	if err != nil {
		return nil, err
	}
	got, err := q.Wait(10*time.Second, p)
	if err != nil {
		return nil, err
	}
	n := int(got[p.Head])
	var out []byte
	for _, w := range p.Writable {
		k := min(n, len(w))
		out = append(out, w[:k]...)
		n -= k
	}
	return out, nil
}
