package vhostuser

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Device serves the requests of one virtio device.
type Device interface {
	// NumQueues is the number of virtqueues the device has.
	NumQueues() int
	// Features are device-specific virtio feature bits, offered in
	// addition to the ones the transport implements.
	Features() uint64
	// Limits bound the chains the device accepts.
	Limits() Limits
	// Handle serves chain c of queue q and returns the number of bytes it
	// wrote to c.Writable. It is called concurrently, also for one queue.
	Handle(ctx context.Context, q int, c *Chain) uint32
}

// Config tunes a Backend.
type Config struct {
	// Workers is the number of goroutines that serve requests, as
	// virtiofsd's --thread-pool-size: 0 serves each queue's requests one
	// by one in the goroutine that takes them off the queue.
	Workers int
	// InlineQueues are served in their own goroutine even with Workers > 0
	// (virtio-fs's high-priority queue: FORGET and INTERRUPT must not wait
	// behind blocked requests).
	InlineQueues []int
	// DrainTimeout bounds how long stopping a queue waits for its requests
	// in flight. Default 10s.
	DrainTimeout time.Duration
}

// MaxWorkers caps Config.Workers: a worker blocked in a file operation holds
// an OS thread, and Go ends the process at 10,000 threads.
const MaxWorkers = 1024

const offeredProtocol = ProtocolMQ | ProtocolReplyAck | ProtocolResetDevice | ProtocolConfigureMemSlots

// Backend is the device side of one vhost-user connection.
type Backend struct {
	dev     Device
	cfg     Config
	offered uint64

	// Owned by the goroutine running Serve.
	acked         uint64
	ackedProtocol uint64
	queues        []*queue

	mem  memHolder
	jobs chan job
	// quit ends the workers once Serve has stopped every queue. jobs is
	// never closed: a dispatcher of an abandoned run may still hold a chain.
	quit chan struct{}
	// dispatchers counts the dispatchers that hand chains to workers;
	// they end promptly once their run is abandoned.
	dispatchers sync.WaitGroup

	// anon is the inode every eventfd shares (see checkEventfd).
	anonOnce sync.Once
	anon     unix.Stat_t
	anonErr  error
}

type job struct {
	q *queue
	c *Chain
}

// NewBackend returns a backend for dev.
func NewBackend(dev Device, cfg Config) *Backend {
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	b := &Backend{
		dev:     dev,
		cfg:     cfg,
		offered: FeatureVersion1 | FeatureRingIndirectDesc | FeatureRingEventIdx | FeatureProtocolFeatures | dev.Features(),
	}
	n := dev.NumQueues()
	b.queues = make([]*queue, n)
	for i := range b.queues {
		b.queues[i] = &queue{index: i, b: b}
	}
	for _, i := range cfg.InlineQueues {
		if i >= 0 && i < n {
			b.queues[i].inline = true
		}
	}
	return b
}

// Serve speaks the protocol on c until the frontend hangs up (nil) or ctx
// ends (ctx.Err()), then stops every queue and releases guest memory. A
// Backend serves one connection once.
func (b *Backend) Serve(ctx context.Context, c *net.UnixConn) error {
	if err := CheckHost(); err != nil {
		return err
	}
	if b.cfg.Workers > MaxWorkers || b.cfg.Workers < 0 {
		return fmt.Errorf("vhost-user backend: %d workers, want 0 to %d: %w", b.cfg.Workers, MaxWorkers, errdefs.ErrInvalidArgument)
	}
	if b.cfg.Workers > 0 {
		b.jobs = make(chan job, b.cfg.Workers)
		b.quit = make(chan struct{})
		var wg sync.WaitGroup
		for range b.cfg.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.work(ctx)
			}()
		}
		// After shutdown: every run is stopped or abandoned, so what is
		// left in jobs belongs to abandoned runs and is only released,
		// once no dispatcher can add to it. Workers still inside Handle
		// are waited for: the device's file system is closed after Serve
		// returns.
		defer func() {
			close(b.quit)
			wg.Wait()
			b.dispatchers.Wait()
			for {
				select {
				case j := <-b.jobs:
					j.q.complete(ctx, j.c, 0)
				default:
					return
				}
			}
		}()
	}
	stopRead := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stopRead()
	defer b.shutdown(ctx)

	cn := newConn(c)
	for {
		m, err := cn.read()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ECONNRESET) {
				log.G(ctx).Debug("vhost-user frontend disconnected")
				return nil
			}
			return err
		}
		reply, herr := b.handle(ctx, &m)
		m.closeFDs()
		if herr != nil {
			log.G(ctx).WithError(herr).WithField("request", requestName(m.Request)).Warn("vhost-user request failed")
		}
		switch {
		case reply != nil:
			err = cn.reply(m.header, reply)
		case m.needReply() && b.ackedProtocol&ProtocolReplyAck != 0:
			var ack [8]byte
			if herr != nil {
				ack[0] = 1
			}
			err = cn.reply(m.header, ack[:])
		}
		if err != nil {
			return err
		}
	}
}

// CheckHost refuses a big-endian host. Split virtqueues are little-endian
// and avail->idx and used->idx are accessed as native 32-bit atomics over
// (flags, idx), which only a little-endian host reads right; byte-swapping
// every ring access is not worth it for hosts we cannot test on.
func CheckHost() error {
	if !littleEndianHost {
		return fmt.Errorf("vhost-user backend: %s is big-endian and virtqueues are little-endian; "+
			"serve mode runs on little-endian hosts only (amd64, arm64, ppc64le): use an upstream virtiofsd here: %w",
			runtime.GOARCH, errdefs.ErrNotImplemented)
	}
	return nil
}

func (b *Backend) work(ctx context.Context) {
	for {
		select {
		case j := <-b.jobs:
			j.q.serve(ctx, j.c)
		case <-b.quit:
			return
		}
	}
}

func (b *Backend) shutdown(ctx context.Context) {
	for _, q := range b.queues {
		q.stop(ctx)
		q.closeFDs()
	}
	if t := b.mem.swap(nil); t != nil {
		t.unref()
	}
}

func u64(v uint64) []byte {
	var p [8]byte
	binary.LittleEndian.PutUint64(p[:], v)
	return p[:]
}

func (b *Backend) queue(i uint32, what string) (*queue, error) {
	if int(i) >= len(b.queues) {
		return nil, fmt.Errorf("%s: queue %d, device has %d: %w", what, i, len(b.queues), errdefs.ErrInvalidArgument)
	}
	return b.queues[i], nil
}

// vringState decodes a vring state payload and finds the queue it names.
func (b *Backend) vringState(m *message, what string) (vringState, *queue, error) {
	s, err := decodeVringState(m.payload, what)
	if err != nil {
		return s, nil, err
	}
	q, err := b.queue(s.Index, what)
	return s, q, err
}

// stopped refuses to change a running queue's layout.
func (q *queue) stopped(what string) error {
	if q.running() {
		return fmt.Errorf("%s: queue %d is running: %w", what, q.index, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// handle applies one message. A non-nil reply is sent as the answer; a
// message without one is acknowledged when the frontend asked for it.
func (b *Backend) handle(ctx context.Context, m *message) (reply []byte, err error) {
	what := requestName(m.Request)
	switch m.Request {
	case reqGetFeatures:
		return u64(b.offered), nil
	case reqSetFeatures:
		v, err := decodeU64(m.payload, what)
		if err != nil {
			return nil, err
		}
		if v&^b.offered != 0 {
			return nil, fmt.Errorf("%s: 0x%x acks features never offered (0x%x): %w", what, v, b.offered, errdefs.ErrInvalidArgument)
		}
		b.acked = v
		for _, q := range b.queues {
			q.features = v
		}
		return nil, nil
	case reqGetProtocolFeatures:
		return u64(offeredProtocol), nil
	case reqSetProtocolFeatures:
		v, err := decodeU64(m.payload, what)
		if err != nil {
			return nil, err
		}
		if v&^offeredProtocol != 0 {
			return nil, fmt.Errorf("%s: 0x%x acks protocol features never offered: %w", what, v, errdefs.ErrInvalidArgument)
		}
		b.ackedProtocol = v
		return nil, nil
	case reqSetOwner:
		return nil, nil
	case reqResetOwner, reqResetDevice:
		for _, q := range b.queues {
			q.stop(ctx)
			q.closeFDs()
			q.reset()
		}
		b.acked = 0
		return nil, nil
	case reqGetQueueNum:
		return u64(uint64(len(b.queues))), nil
	case reqGetMaxMemSlots:
		return u64(maxMemSlots), nil
	case reqSetMemTable:
		return nil, b.setMemTable(ctx, m)
	case reqAddMemReg:
		return nil, b.addMemReg(ctx, m)
	case reqRemMemReg:
		return nil, b.remMemReg(ctx, m)
	case reqSetVringNum:
		s, q, err := b.vringState(m, what)
		if err != nil {
			return nil, err
		}
		if s.Num == 0 || s.Num > maxQueueSize || s.Num&(s.Num-1) != 0 {
			return nil, fmt.Errorf("%s: queue %d size %d, want a power of 2 up to %d: %w", what, s.Index, s.Num, maxQueueSize, errdefs.ErrInvalidArgument)
		}
		if err := q.stopped(what); err != nil {
			return nil, err
		}
		q.num = uint16(s.Num)
		return nil, nil
	case reqSetVringAddr:
		a, err := decodeVringAddr(m.payload)
		if err != nil {
			return nil, err
		}
		q, err := b.queue(a.Index, what)
		if err != nil {
			return nil, err
		}
		if a.Flags&vringAddrFlagLog != 0 {
			return nil, fmt.Errorf("%s: dirty logging requested but not offered: %w", what, errdefs.ErrNotImplemented)
		}
		if err := q.stopped(what); err != nil {
			return nil, err
		}
		q.addrs = ringAddrs{desc: a.Desc, avail: a.Avail, used: a.Used}
		q.addrSet = true
		return nil, b.maybeStart(ctx, q)
	case reqSetVringBase:
		s, q, err := b.vringState(m, what)
		if err != nil {
			return nil, err
		}
		if err := q.stopped(what); err != nil {
			return nil, err
		}
		if s.Num > 0xffff {
			return nil, fmt.Errorf("%s: base %d: %w", what, s.Num, errdefs.ErrInvalidArgument)
		}
		q.nextAvail, q.nextUsed = uint16(s.Num), uint16(s.Num)
		return nil, nil
	case reqGetVringBase:
		s, q, err := b.vringState(m, what)
		if err != nil {
			return nil, err
		}
		q.stop(ctx)
		q.closeFDs()
		q.enabled = false
		var p [vringStateSize]byte
		binary.LittleEndian.PutUint32(p[0:], s.Index)
		binary.LittleEndian.PutUint32(p[4:], uint32(q.nextAvail))
		return p[:], nil
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		return nil, b.setVringFD(ctx, m)
	case reqSetVringEnable:
		s, q, err := b.vringState(m, what)
		if err != nil {
			return nil, err
		}
		if b.acked&FeatureProtocolFeatures == 0 {
			return nil, fmt.Errorf("%s without VHOST_USER_F_PROTOCOL_FEATURES: %w", what, errdefs.ErrFailedPrecondition)
		}
		switch s.Num {
		case 1:
			q.enabled = true
			return nil, b.maybeStart(ctx, q)
		case 0:
			q.enabled = false
			q.stop(ctx)
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %d: %w", what, s.Num, errdefs.ErrInvalidArgument)
	case reqSetBackendReqFD, reqSetLogFD, reqSetLogBase:
		// Not offered; fds are closed by the caller.
		return nil, fmt.Errorf("%s: not offered: %w", what, errdefs.ErrNotImplemented)
	}
	return nil, fmt.Errorf("%s: unsupported: %w", what, errdefs.ErrNotImplemented)
}

func (b *Backend) setVringFD(ctx context.Context, m *message) error {
	what := requestName(m.Request)
	v, err := decodeU64(m.payload, what)
	if err != nil {
		return err
	}
	fd, err := m.takeFD()
	if err != nil {
		return err
	}
	if v&^uint64(vringIndexMask|vringFDInvalid) != 0 {
		closeFD(fd)
		return fmt.Errorf("%s: payload 0x%x: %w", what, v, errdefs.ErrInvalidArgument)
	}
	q, err := b.queue(uint32(v&vringIndexMask), what)
	if err != nil {
		closeFD(fd)
		return err
	}
	noFD := v&vringFDInvalid != 0
	if noFD != (fd < 0) {
		closeFD(fd)
		return fmt.Errorf("%s: fd flag and fds sent disagree: %w", what, errdefs.ErrInvalidArgument)
	}
	var f *os.File
	if fd >= 0 {
		if err := b.checkEventfd(fd); err != nil {
			closeFD(fd)
			return fmt.Errorf("%s: queue %d: %w", what, q.index, err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			closeFD(fd)
			return fmt.Errorf("%s: %w", what, err)
		}
		f = os.NewFile(uintptr(fd), fmt.Sprintf("vring%d-%s", q.index, what))
	}
	switch m.Request {
	case reqSetVringErr:
		// Errors are logged, not signalled.
		if f != nil {
			_ = f.Close()
		}
		return nil
	case reqSetVringCall:
		if old := q.call.Swap(f); old != nil {
			_ = old.Close()
		}
		return nil
	}
	if f == nil {
		return fmt.Errorf("%s: polling mode (no kick fd) is not supported: %w", what, errdefs.ErrNotImplemented)
	}
	q.stop(ctx)
	if q.kick != nil {
		_ = q.kick.Close()
	}
	q.kick = f
	// Without VHOST_USER_F_PROTOCOL_FEATURES a ring starts on its kick.
	if b.acked&FeatureProtocolFeatures == 0 {
		q.enabled = true
	}
	return b.maybeStart(ctx, q)
}

// checkEventfd refuses an fd that is not an anonymous-inode file such as
// an eventfd: a pipe, socket or file would stall or fail the dispatcher
// later, far from the message that brought it. All anonymous-inode files
// share one inode, which a probe eventfd of our own identifies; timerfd and
// signalfd share it too, and only /proc (not reachable in the sandbox)
// could tell them apart.
func (b *Backend) checkEventfd(fd int) error {
	b.anonOnce.Do(func() {
		p, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			b.anonErr = fmt.Errorf("probe eventfd: %w", err)
			return
		}
		defer unix.Close(p)
		b.anonErr = unix.Fstat(p, &b.anon)
	})
	if b.anonErr != nil {
		return b.anonErr
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat fd: %w", err)
	}
	if st.Dev != b.anon.Dev || st.Ino != b.anon.Ino {
		return fmt.Errorf("fd is not an eventfd (mode 0%o): %w", st.Mode, errdefs.ErrInvalidArgument)
	}
	return nil
}

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

func (b *Backend) maybeStart(ctx context.Context, q *queue) error {
	if q.running() || q.kick == nil || !q.addrSet || q.num == 0 || !q.enabled {
		return nil
	}
	t := b.mem.acquire()
	if t == nil {
		return fmt.Errorf("queue %d: rings set before any memory table: %w", q.index, errdefs.ErrFailedPrecondition)
	}
	_, err := translateRings(t, q.addrs, q.num, q.features&FeatureRingEventIdx != 0)
	t.unref()
	if err != nil {
		return fmt.Errorf("queue %d: %w", q.index, err)
	}
	q.start(ctx)
	return nil
}

func (b *Backend) setMemTable(ctx context.Context, m *message) error {
	ds, err := decodeMemTable(m.payload)
	if err != nil {
		return err
	}
	if len(m.fds) != len(ds) {
		return fmt.Errorf("SET_MEM_TABLE: %d regions but %d fds: %w", len(ds), len(m.fds), errdefs.ErrInvalidArgument)
	}
	if err := checkDisjoint(ds); err != nil {
		return fmt.Errorf("SET_MEM_TABLE: %w", err)
	}
	regions := make([]region, 0, len(ds))
	for i, d := range ds {
		r, err := mapRegion(d, m.fds[i])
		if err != nil {
			releaseUnused(regions)
			return fmt.Errorf("SET_MEM_TABLE: %w", err)
		}
		regions = append(regions, r)
	}
	b.replaceMem(ctx, newMemTable(regions))
	return nil
}

func (b *Backend) addMemReg(ctx context.Context, m *message) error {
	d, err := decodeMemReg(m.payload, "ADD_MEM_REG")
	if err != nil {
		return err
	}
	if len(m.fds) != 1 {
		return fmt.Errorf("ADD_MEM_REG: %d fds, want 1: %w", len(m.fds), errdefs.ErrInvalidArgument)
	}
	var old []region
	if t := b.mem.acquire(); t != nil {
		old = t.regions
		defer t.unref()
	}
	if len(old) >= maxMemSlots {
		return fmt.Errorf("ADD_MEM_REG: all %d slots used: %w", maxMemSlots, errdefs.ErrResourceExhausted)
	}
	ds := []regionDesc{d}
	for _, r := range old {
		ds = append(ds, r.regionDesc)
	}
	if err := checkDisjoint(ds); err != nil {
		return fmt.Errorf("ADD_MEM_REG: %w", err)
	}
	r, err := mapRegion(d, m.fds[0])
	if err != nil {
		return fmt.Errorf("ADD_MEM_REG: %w", err)
	}
	regions := append(append(make([]region, 0, len(old)+1), old...), r)
	b.replaceMem(ctx, newMemTable(regions))
	return nil
}

func (b *Backend) remMemReg(ctx context.Context, m *message) error {
	d, err := decodeMemReg(m.payload, "REM_MEM_REG")
	if err != nil {
		return err
	}
	t := b.mem.acquire()
	if t == nil {
		return fmt.Errorf("REM_MEM_REG: no memory: %w", errdefs.ErrNotFound)
	}
	defer t.unref()
	regions := make([]region, 0, len(t.regions))
	found := false
	for _, r := range t.regions {
		if !found && r.GuestPhysAddr == d.GuestPhysAddr && r.Size == d.Size {
			found = true
			continue
		}
		regions = append(regions, r)
	}
	if !found {
		return fmt.Errorf("REM_MEM_REG: no region at guest 0x%x size 0x%x: %w", d.GuestPhysAddr, d.Size, errdefs.ErrNotFound)
	}
	b.replaceMem(ctx, newMemTable(regions))
	return nil
}

func (b *Backend) replaceMem(ctx context.Context, t *memTable) {
	if old := b.mem.swap(t); old != nil {
		old.unref()
	}
	log.G(ctx).WithField("regions", len(t.regions)).Debug("vhost-user memory table set")
}

// memHolder publishes the current memTable to the queue goroutines.
type memHolder struct {
	mu sync.Mutex // serializes swaps only; readers use p
	p  atomicTable
}

func (h *memHolder) swap(t *memTable) *memTable {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.p.Swap(t)
}

// acquire returns the current table with a reference, or nil.
func (h *memHolder) acquire() *memTable {
	for {
		t := h.p.Load()
		if t == nil {
			return nil
		}
		if t.tryRef() {
			if h.p.Load() == t {
				return t
			}
			t.unref()
		}
	}
}
