package main

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// ring lets several streams keep requests in flight on one virtqueue, as a
// guest's tasks do. Each stream owns fixed descriptors and a fixed window of
// guest memory, so a reply stays intact until its stream sends again
// (buffers taken from a shared heap could be reused by other streams before
// a slow reader looked at them). One reaper goroutine alone waits on the
// call eventfd: two waiters on one eventfd could each consume the other's
// signal.
type ring struct {
	q *vut.Queue
	f *vut.FSDevice

	mu      sync.Mutex
	waiting map[uint16]chan uint32
	seen    uint16 // used elements reaped so far
	stop    chan struct{}
	stopped chan struct{}
}

// Per stream: descriptors, and guest memory for the readable part (header,
// fixed part and a 1 MiB payload) and the writable part (reply header and a
// 1 MiB body).
const (
	descsPerStream = 4
	// dataSide fits a 1 MiB payload and the request's own parts.
	dataSide = mib + 4096
)

func newRing(f *vut.FSDevice, q *vut.Queue) *ring {
	r := &ring{q: q, f: f, waiting: map[uint16]chan uint32{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	go r.reap()
	return r
}

func (r *ring) close() {
	close(r.stop)
	<-r.stopped
}

func (r *ring) reap() {
	defer close(r.stopped)
	for {
		us := r.q.Reap()
		if len(us) == 0 {
			// EVENT_IDX: ask for a signal with the next used element, then
			// look once more in case it landed meanwhile.
			r.q.SetUsedEvent(r.seen)
			if r.q.UsedIdx() != r.seen {
				continue
			}
			select {
			case <-r.stop:
				return
			default:
			}
			r.q.WaitCall(20 * time.Millisecond)
			continue
		}
		r.mu.Lock()
		for _, u := range us {
			r.seen++
			if ch, ok := r.waiting[u.ID]; ok {
				delete(r.waiting, u.ID)
				ch <- u.Len
			}
		}
		r.mu.Unlock()
	}
}

// stream is one sender's share of a ring: descriptors [desc, desc+4) and
// guest memory at gpa. A stream has one request in flight at a time.
type stream struct {
	r    *ring
	desc uint16
	gpa  uint64
	side uint64 // bytes for each of the readable and the writable part
	ch   chan uint32
}

// streams carves n streams with side bytes for each direction out of the
// queue's area after its rings: the queue was set up at gpa with area bytes
// (vhostusertest.SetupQueue).
func (r *ring) streams(n int, gpa, area, side uint64) ([]*stream, error) {
	heap := gpa + vut.RingBytes(r.q.Size)
	if uint64(n)*2*side > gpa+area-heap || n*descsPerStream > int(r.q.Size) {
		return nil, fmt.Errorf("queue %d: no room for %d streams", r.q.Index, n)
	}
	out := make([]*stream, n)
	for i := range out {
		out[i] = &stream{r: r, desc: uint16(i * descsPerStream), gpa: heap + uint64(i)*2*side, side: side, ch: make(chan uint32, 1)}
	}
	return out, nil
}

// do sends readable pieces and offers writable buffers of the given sizes,
// and waits for the device to use them: the writable buffers (views of
// guest memory, valid until this stream's next do) and the used length.
func (s *stream) do(readable [][]byte, writable []int) ([][]byte, uint32, error) {
	if len(readable)+len(writable) > descsPerStream {
		return nil, 0, fmt.Errorf("%d buffers in one request", len(readable)+len(writable))
	}
	var ds []vut.Desc
	off := s.gpa
	for _, b := range readable {
		copy(s.r.f.Guest(off, uint64(len(b))), b)
		ds = append(ds, vut.Desc{Addr: off, Len: uint32(len(b))})
		off += uint64(len(b)+63) &^ 63
	}
	off = s.gpa + s.side
	var out [][]byte
	for _, n := range writable {
		out = append(out, s.r.f.Guest(off, uint64(n)))
		ds = append(ds, vut.Desc{Addr: off, Len: uint32(n), Flags: vut.DescWrite})
		off += uint64(n+63) &^ 63
	}
	if off > s.gpa+2*s.side {
		return nil, 0, fmt.Errorf("request of %d bytes: larger than a stream's memory", off-s.gpa)
	}
	for i := range ds {
		if i+1 < len(ds) {
			ds[i].Flags |= vut.DescNext
			ds[i].Next = s.desc + uint16(i+1)
		}
		s.r.q.PutDesc(s.r.q.DescGPA, s.desc+uint16(i), ds[i])
	}
	s.r.mu.Lock()
	s.r.waiting[s.desc] = s.ch
	s.r.mu.Unlock()
	s.r.q.Publish(s.desc)
	select {
	case n := <-s.ch:
		return out, n, nil
	case <-time.After(completionTimeout):
		return nil, 0, fmt.Errorf("queue %d: no completion in %v", s.r.q.Index, completionTimeout)
	}
}

// completionTimeout bounds a request: far above any request's latency
// even on a loaded host, short enough that a daemon that died costs little.
const completionTimeout = 3 * time.Second

// session is what a connection's streams share.
type session struct {
	unique   atomic.Uint64
	maxWrite uint32
}

// client is one guest task's FUSE driver: requests on the request queue,
// FORGET on the high-priority queue, as Linux's virtio-fs driver sends them.
type client struct {
	req, hiprio *stream
	*session
}

func (c *client) nextUnique() uint64 { return c.unique.Add(1) }

func wire[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// body is a request struct without its InHeader.
func body[T any](v *T) []byte { return bytes.Clone(wire(v)[unsafe.Sizeof(fuse.InHeader{}):]) }

func decode[T any](b []byte) *T {
	var v T
	copy(wire(&v), b)
	return &v
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// call sends opcode on node with the fixed part in and payload after it,
// offering outSize bytes for the reply body, and returns the body (a view
// of guest memory) and the FUSE error.
func (c *client) call(opcode uint32, node uint64, in, payload []byte, outSize int) ([]byte, syscall.Errno, error) {
	h := fuse.InHeader{Opcode: opcode, NodeId: node, Unique: c.nextUnique()}
	h.Length = uint32(int(unsafe.Sizeof(h)) + len(in) + len(payload))
	readable := [][]byte{append(bytes.Clone(wire(&h)), in...)}
	if len(payload) > 0 {
		readable = append(readable, payload)
	}
	writable := []int{16}
	if outSize > 0 {
		writable = append(writable, outSize)
	}
	bufs, n, err := c.req.do(readable, writable)
	if err != nil {
		return nil, 0, fmt.Errorf("opcode %d: %w", opcode, err)
	}
	if n < 16 {
		return nil, 0, fmt.Errorf("opcode %d: reply of %d bytes", opcode, n)
	}
	oh := decode[fuse.OutHeader](bufs[0])
	if oh.Unique != h.Unique || oh.Length != n {
		return nil, 0, fmt.Errorf("opcode %d: reply header %+v, used length %d, sent unique %d", opcode, *oh, n, h.Unique)
	}
	if oh.Status != 0 {
		return nil, syscall.Errno(-oh.Status), nil
	}
	if n == 16 {
		return nil, 0, nil
	}
	return bufs[1][:n-16], 0, nil
}

// must is call for requests that must succeed.
func (c *client) must(opcode uint32, node uint64, in, payload []byte, outSize int) ([]byte, error) {
	b, errno, err := c.call(opcode, node, in, payload, outSize)
	if err == nil && errno != 0 {
		err = fmt.Errorf("opcode %d on node %d: %w", opcode, node, errno)
	}
	return b, err
}

// FUSE opcodes (include/uapi/linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opUnlink      = 10
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opRelease     = 18
	opInit        = 26
	opOpendir     = 27
	opReleasedir  = 29
	opCreate      = 35
	opReaddirplus = 44
)

const (
	entrySize  = int(unsafe.Sizeof(fuse.EntryOut{}))
	attrSize   = int(unsafe.Sizeof(fuse.AttrOut{}))
	openSize   = int(unsafe.Sizeof(fuse.OpenOut{}))
	createSize = int(unsafe.Sizeof(fuse.CreateOut{}))
)

// init negotiates as Linux 6.1's virtio-fs does, with the flags a guest
// that reads directories with READDIRPLUS and writes 1 MiB offers.
func (c *client) init() error {
	flags := uint64(fuse.CAP_ASYNC_READ | fuse.CAP_POSIX_LOCKS | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_EXPORT_SUPPORT |
		fuse.CAP_BIG_WRITES | fuse.CAP_DONT_MASK | fuse.CAP_FLOCK_LOCKS | fuse.CAP_AUTO_INVAL_DATA |
		fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ASYNC_DIO | fuse.CAP_PARALLEL_DIROPS |
		fuse.CAP_MAX_PAGES | fuse.CAP_SUBMOUNTS)
	in := fuse.InitIn{Major: 7, Minor: 36, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	b, err := c.must(opInit, 0, body(&in), nil, 64)
	if err != nil {
		return fmt.Errorf("INIT: %w", err)
	}
	out := decode[fuse.InitOut](b)
	c.maxWrite = out.MaxWrite
	if c.maxWrite == 0 {
		return fmt.Errorf("INIT: max_write 0")
	}
	return nil
}

func (c *client) lookup(parent uint64, name string) (*fuse.EntryOut, error) {
	b, err := c.must(opLookup, parent, nil, cstr(name), entrySize)
	if err != nil {
		return nil, fmt.Errorf("LOOKUP %s: %w", name, err)
	}
	return decode[fuse.EntryOut](b), nil
}

func (c *client) getattr(node uint64) error {
	_, err := c.must(opGetattr, node, body(&fuse.GetAttrIn{}), nil, attrSize)
	return err
}

// forget goes on the high-priority queue and has no reply.
func (c *client) forget(node, n uint64) error {
	in := fuse.ForgetIn{Nlookup: n}
	h := fuse.InHeader{Opcode: opForget, NodeId: node, Unique: c.nextUnique()}
	h.Length = uint32(unsafe.Sizeof(in))
	in.InHeader = h
	_, _, err := c.hiprio.do([][]byte{bytes.Clone(wire(&in))}, nil)
	return err
}

func (c *client) open(node uint64, flags uint32, op uint32) (uint64, error) {
	b, err := c.must(op, node, body(&fuse.OpenIn{Flags: flags}), nil, openSize)
	if err != nil {
		return 0, err
	}
	return decode[fuse.OpenOut](b).Fh, nil
}

func (c *client) release(node, fh uint64, op uint32) error {
	_, err := c.must(op, node, body(&fuse.ReleaseIn{Fh: fh}), nil, 0)
	return err
}

func (c *client) create(parent uint64, name string) (*fuse.EntryOut, uint64, error) {
	in := fuse.CreateIn{Flags: syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL, Mode: 0o644 | syscall.S_IFREG}
	b, err := c.must(opCreate, parent, body(&in), cstr(name), createSize)
	if err != nil {
		return nil, 0, fmt.Errorf("CREATE %s: %w", name, err)
	}
	out := decode[fuse.CreateOut](b)
	return &out.EntryOut, out.OpenOut.Fh, nil
}

func (c *client) unlink(parent uint64, name string) error {
	_, err := c.must(opUnlink, parent, nil, cstr(name), 0)
	return err
}

func (c *client) read(node, fh, off uint64, size uint32) (int, error) {
	b, err := c.must(opRead, node, body(&fuse.ReadIn{Fh: fh, Offset: off, Size: size}), nil, int(size))
	return len(b), err
}

func (c *client) write(node, fh, off uint64, data []byte) error {
	in := fuse.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	b, err := c.must(opWrite, node, body(&in), data, int(unsafe.Sizeof(fuse.WriteOut{})))
	if err != nil {
		return err
	}
	if n := decode[fuse.WriteOut](b).Size; n != uint32(len(data)) {
		return fmt.Errorf("WRITE: %d of %d bytes", n, len(data))
	}
	return nil
}

// readdirplus reads one buffer of directory entries at off: the entries'
// node IDs (each a lookup the guest now holds) and the next offset, or
// done at the end.
func (c *client) readdirplus(node, fh, off uint64, size uint32) (ids []uint64, next uint64, done bool, err error) {
	b, err := c.must(opReaddirplus, node, body(&fuse.ReadIn{Fh: fh, Offset: off, Size: size}), nil, int(size))
	if err != nil {
		return nil, 0, false, fmt.Errorf("READDIRPLUS: %w", err)
	}
	if len(b) == 0 {
		return nil, off, true, nil
	}
	const direntSize = 24
	for len(b) >= entrySize+direntSize {
		e := decode[fuse.EntryOut](b)
		d := decode[dirent](b[entrySize:])
		rec := entrySize + direntSize + (int(d.NameLen)+7)&^7
		if rec > len(b) {
			return nil, 0, false, fmt.Errorf("READDIRPLUS: entry of %d bytes in %d", rec, len(b))
		}
		if e.NodeId != 0 {
			ids = append(ids, e.NodeId)
		}
		next = d.Off
		b = b[rec:]
	}
	return ids, next, false, nil
}

// dirent is struct fuse_dirent without its name.
type dirent struct {
	Ino, Off uint64
	NameLen  uint32
	Typ      uint32
}
