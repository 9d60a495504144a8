package fsserver

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	stdlog "log"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
)

// Queue 0 of a virtio-fs device is the high-priority queue (FORGET,
// BATCH_FORGET, INTERRUPT); the rest are request queues.
const HiprioQueue = 0

// FUSE wire sizes the bridge needs itself.
const (
	inHeaderSize  = 40
	outHeaderSize = 16
	opForget      = 2
	opInit        = 26
	opDestroy     = 38
	opBatchForget = 42
	// FUSE protocol versions go-fuse speaks (include/uapi/linux/fuse.h).
	fuseMajor    = 7
	fuseMinorMin = 12
	// slack covers the request header and structs around a payload of
	// max_write bytes, and xattr values (64 KiB).
	slack = 1<<16 + 1<<12
)

// Capabilities the virtio-fs device never negotiates: DAX needs a shared
// memory window we do not offer, passthrough needs /dev/fuse.
const refusedCaps = fuse.CAP_MAP_ALIGNMENT | fuse.CAP_HAS_INODE_DAX | fuse.CAP_PASSTHROUGH

// DeviceConfig shapes the virtio-fs device.
type DeviceConfig struct {
	// RequestQueues is how many request queues the device accepts (the
	// frontend's num-request-queues may be lower). Default 1.
	RequestQueues int
}

// Device is a virtio-fs device serving a fuse.RawFileSystem.
type Device struct {
	fs     fuse.RawFileSystem
	ps     *fuse.ProtocolServer
	queues int
	lim    vhostuser.Limits

	// session orders INIT and DESTROY against every other request: INIT
	// updates the protocol server's negotiated state, which requests read,
	// and a second INIT (a rebooted guest) or DESTROY resets the file
	// system, which must not happen under a request of the old session.
	// Those two take it exclusively.
	session  sync.RWMutex
	initDone atomic.Bool
	// ownForget: the bridge serves FORGET and BATCH_FORGET itself (see
	// forget), unless go-fuse must see them (it keeps inodes for ever, or
	// logs every request).
	ownForget bool
	// warn limits the warnings a guest can trigger.
	warn *vhostuser.WarnLimiter
}

var _ vhostuser.Device = (*Device)(nil)

// NewDevice returns the device for fs with the session options opts (as the
// file system's own MountOptions give them). opts is copied; go-fuse's
// messages go to ctx's logger.
func NewDevice(ctx context.Context, fs fuse.RawFileSystem, opts *fuse.MountOptions, cfg DeviceConfig) *Device {
	o := *opts
	o.DisabledCapabilities |= refusedCaps
	o.ExtraCapabilities &^= refusedCaps
	warn := &vhostuser.WarnLimiter{}
	if o.Logger == nil {
		// go-fuse complains about malformed requests: the guest chooses
		// how often.
		o.Logger = stdlog.New(&fuseLog{log: log.G(ctx), warn: warn}, "", 0)
	}
	if o.MaxWrite <= 0 {
		o.MaxWrite = 1 << 20
	}
	if cfg.RequestQueues <= 0 {
		cfg.RequestQueues = 1
	}
	ps := fuse.NewProtocolServer(fs, &o)
	limit := uint64(o.MaxWrite) + slack
	return &Device{
		fs:     fs,
		ps:     ps,
		queues: 1 + cfg.RequestQueues,
		lim:    vhostuser.Limits{MaxReadable: limit, MaxWritable: limit},
		warn:   warn,

		ownForget: !o.RememberInodes && !o.Debug,
	}
}

// fuseLog passes go-fuse's messages to the log as warnings, one per kind
// and interval.
type fuseLog struct {
	log  *log.Entry
	warn *vhostuser.WarnLimiter
}

func (w *fuseLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if ok, n := w.warn.Allow(messageKind(msg)); ok {
		e := w.log.WithField("component", "go-fuse")
		if n > 0 {
			e = e.WithField("suppressed", n)
		}
		e.Warn(msg)
	}
	return len(p), nil
}

// GuestLog is a writer for messages a guest can cause, such as those go-fuse
// prints with the standard logger: each becomes a warning on ctx's logger,
// one per kind and interval.
func (d *Device) GuestLog(ctx context.Context) io.Writer {
	return &fuseLog{log: log.G(ctx), warn: d.warn}
}

// messageKind is msg's first words without numbers: "Unimplemented opcode
// 9999" and "Unimplemented opcode 4242" are one kind.
func messageKind(msg string) string {
	words := strings.Fields(strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, msg))
	return strings.Join(words[:min(len(words), 3)], " ")
}

// guestWarn logs a warning the guest caused, rate-limited by reason.
func (d *Device) guestWarn(ctx context.Context, q int, reason string, fields log.Fields) {
	ok, n := d.warn.Allow(reason)
	if !ok {
		return
	}
	e := log.G(ctx).WithFields(fields).WithField("queue", q)
	if n > 0 {
		e = e.WithField("suppressed", n)
	}
	e.Warn(reason)
}

// NumQueues implements vhostuser.Device.
func (d *Device) NumQueues() int { return d.queues }

// Features implements vhostuser.Device: virtio-fs has no feature bits of its
// own besides the notification one we do not offer.
func (d *Device) Features() uint64 { return 0 }

// Limits implements vhostuser.Device.
func (d *Device) Limits() vhostuser.Limits { return d.lim }

// Handle implements vhostuser.Device: one FUSE request in c.Readable, its
// reply into c.Writable.
func (d *Device) Handle(ctx context.Context, q int, c *vhostuser.Chain) (n uint32) {
	var hdr [inHeaderSize]byte
	got := copyIov(hdr[:], c.Readable)
	op := uint32(0)
	if got == inHeaderSize {
		op = binary.LittleEndian.Uint32(hdr[4:])
	}
	if op == opInit || op == opDestroy {
		// Both reset the session: never under another request.
		d.session.Lock()
		defer d.session.Unlock()
	} else {
		d.session.RLock()
		defer d.session.RUnlock()
	}
	defer func() {
		// The file system and go-fuse already recover their panics; this
		// catches the bridge's own so one bad request cannot kill the daemon.
		if r := recover(); r != nil {
			d.guestWarn(ctx, q, "virtio-fs request panicked", log.Fields{"panic": r})
			n = errorReply(c.Writable, hdr[:got], syscall.EIO)
		}
	}()
	var initFlags uint64
	switch {
	case op == opInit:
		var err error
		if initFlags, err = parseInit(c.Readable); err != nil {
			d.guestWarn(ctx, q, "virtio-fs INIT refused", log.Fields{"error": err})
			return errorReply(c.Writable, hdr[:got], syscall.EIO)
		}
	case !d.initDone.Load():
		// No session yet: go-fuse has negotiated nothing, so nothing is
		// acted on.
		d.guestWarn(ctx, q, "virtio-fs request before INIT", log.Fields{"opcode": op})
		if op == opForget || op == opBatchForget {
			return 0
		}
		return errorReply(c.Writable, hdr[:got], syscall.EIO)
	}
	if (op == opForget || op == opBatchForget) && d.ownForget && d.forget(op, hdr[:], c.Readable) {
		return 0
	}
	written, status := d.ps.HandleRequest(c.Readable, c.Writable)
	if op == opDestroy {
		if r, ok := d.fs.(resetter); ok {
			r.Reset()
		}
	}
	if !status.Ok() {
		// The request was too short or its reply buffer too small: answer
		// with an error if at all possible so the guest does not hang.
		return errorReply(c.Writable, hdr[:got], syscall.Errno(status))
	}
	if written > 0 && written < outHeaderSize {
		// go-fuse truncates an error reply to a buffer too small for it;
		// the guest must not see a partial header.
		return 0
	}
	if op == opInit && written >= outHeaderSize && outError(c.Writable) == 0 {
		// Only an INIT that succeeded starts a session.
		d.sessionStart(ctx, initFlags)
		d.initDone.Store(true)
		log.G(ctx).WithField("queue", q).Debug("virtio-fs session initialised")
	}
	return uint32(written)
}

// forget serves a FORGET or BATCH_FORGET as go-fuse would, without its
// request record: go-fuse allocates about 1 KiB and a channel for every
// request, and half of what a guest churning through files sends is
// forgets, which have no reply. It returns false for a request shorter than
// it says, or a FORGET of go-fuse's own node, which go-fuse then serves.
func (d *Device) forget(op uint32, hdr []byte, in [][]byte) bool {
	r := iovReader{iov: in}
	r.skip(inHeaderSize)
	var b [16]byte
	if r.read(b[:8]) < 8 {
		return false
	}
	if op == opForget {
		node := binary.LittleEndian.Uint64(hdr[16:])
		if node == pollHackNode {
			return false
		}
		d.fs.Forget(node, binary.LittleEndian.Uint64(b[:8]))
		return true
	}
	count := uint64(binary.LittleEndian.Uint32(b[:4]))
	if count > uint64(r.left())/16 {
		return false
	}
	for range count {
		r.read(b[:])
		node := binary.LittleEndian.Uint64(b[:8])
		if node == pollHackNode {
			continue
		}
		d.fs.Forget(node, binary.LittleEndian.Uint64(b[8:]))
	}
	return true
}

// pollHackNode is the node ID go-fuse answers for itself (its poll probe)
// and never passes to the file system's Forget.
const pollHackNode = ^uint64(0)

// iovReader reads a chain's readable buffers as one stream.
type iovReader struct {
	iov [][]byte
	off int // into iov[0]
}

func (r *iovReader) read(dst []byte) int {
	n := 0
	for n < len(dst) && len(r.iov) > 0 {
		k := copy(dst[n:], r.iov[0][r.off:])
		n += k
		r.off += k
		if r.off == len(r.iov[0]) {
			r.iov, r.off = r.iov[1:], 0
		}
	}
	return n
}

func (r *iovReader) skip(n int) {
	for n > 0 && len(r.iov) > 0 {
		k := min(n, len(r.iov[0])-r.off)
		n -= k
		r.off += k
		if r.off == len(r.iov[0]) {
			r.iov, r.off = r.iov[1:], 0
		}
	}
}

func (r *iovReader) left() int {
	n := -r.off
	for _, b := range r.iov {
		n += len(b)
	}
	return n
}

// File systems that keep per-session state (passthroughfs) learn about
// sessions through these.
type (
	resetter   interface{ Reset() }
	capsSetter interface{ SetKernelCapabilities(flags uint64) }
)

// parseInit checks an INIT's protocol version and returns the flags the
// guest kernel offers.
func parseInit(in [][]byte) (uint64, error) {
	var b [inHeaderSize + 24]byte
	n := copyIov(b[:], in)
	if n < inHeaderSize+16 {
		return 0, fmt.Errorf("INIT of %d bytes, want at least %d", n, inHeaderSize+16)
	}
	major := binary.LittleEndian.Uint32(b[inHeaderSize:])
	minor := binary.LittleEndian.Uint32(b[inHeaderSize+4:])
	if major != fuseMajor || minor < fuseMinorMin {
		return 0, fmt.Errorf("FUSE protocol %d.%d, want %d.%d or later %d.x", major, minor, fuseMajor, fuseMinorMin, fuseMajor)
	}
	flags := uint64(binary.LittleEndian.Uint32(b[inHeaderSize+12:]))
	if flags&fuse.CAP_INIT_EXT != 0 && n >= inHeaderSize+20 {
		flags |= uint64(binary.LittleEndian.Uint32(b[inHeaderSize+16:])) << 32
	}
	return flags, nil
}

// sessionStart tells the file system what the guest kernel offered in an
// INIT that succeeded, and that a second one (a rebooted guest) starts a
// new session. The caller holds the session lock exclusively.
func (d *Device) sessionStart(ctx context.Context, flags uint64) {
	if d.initDone.Load() {
		if r, ok := d.fs.(resetter); ok {
			log.G(ctx).Info("virtio-fs guest started a new session; forgetting the old one")
			r.Reset()
		}
	}
	if s, ok := d.fs.(capsSetter); ok {
		s.SetKernelCapabilities(flags)
	}
}

func copyIov(dst []byte, iov [][]byte) int {
	n := 0
	for _, b := range iov {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], b)
	}
	return n
}

func outError(out [][]byte) int32 {
	var h [outHeaderSize]byte
	copyIov(h[:], out)
	return int32(binary.LittleEndian.Uint32(h[4:]))
}

// errorReply writes a bare FUSE error reply for the request whose header is
// hdr; 0 when there is no room (or no header to answer).
func errorReply(out [][]byte, hdr []byte, errno syscall.Errno) uint32 {
	if len(hdr) < inHeaderSize {
		return 0
	}
	var h [outHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], outHeaderSize)
	binary.LittleEndian.PutUint32(h[4:], uint32(-int32(errno)))
	copy(h[8:], hdr[8:16]) // unique
	total := 0
	for _, b := range out {
		total += len(b)
	}
	if total < outHeaderSize {
		return 0
	}
	src := h[:]
	for _, b := range out {
		k := copy(b, src)
		src = src[k:]
		if len(src) == 0 {
			break
		}
	}
	return outHeaderSize
}

func (d *Device) String() string { return fmt.Sprintf("virtio-fs device (%d queues)", d.queues) }
