package vhostusertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Message codes and bits the frontend uses (vhost-user.rst).
const (
	GetFeatures         = 1
	SetFeatures         = 2
	SetOwner            = 3
	ResetOwner          = 4
	SetMemTable         = 5
	SetVringNum         = 8
	SetVringAddr        = 9
	SetVringBase        = 10
	GetVringBase        = 11
	SetVringKick        = 12
	SetVringCall        = 13
	GetProtocolFeatures = 15
	SetProtocolFeatures = 16
	GetQueueNum         = 17
	SetVringEnable      = 18
	ResetDevice         = 34
	GetMaxMemSlots      = 36
	AddMemReg           = 37
	RemMemReg           = 38

	FlagVersion   = 1
	FlagReply     = 4
	FlagNeedReply = 8

	FeatureIndirect  = 1 << 28
	FeatureEventIdx  = 1 << 29
	FeatureProtocol  = 1 << 30
	FeatureVersion1  = 1 << 32
	ProtocolMQ       = 1 << 0
	ProtocolReplyAck = 1 << 3
	ProtocolMemSlots = 1 << 15
)

// Region is one guest memory region shared with the backend.
type Region struct {
	GPA, Size, UserAddr, Offset uint64
}

// Frontend is the QEMU side of the connection plus the guest memory.
type Frontend struct {
	Conn *net.UnixConn
	// Mem is the whole memfd; regions are windows of it.
	Mem     []byte
	MemFD   int
	Regions []Region

	mu       sync.Mutex
	features uint64
	proto    uint64
}

// NewPair makes a connected socket pair: the frontend's end and the one to
// give the backend.
func NewPair() (front, back *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	conv := func(fd int, name string) (*net.UnixConn, error) {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	if front, err = conv(fds[0], "frontend"); err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	if back, err = conv(fds[1], "backend"); err != nil {
		front.Close()
		return nil, nil, err
	}
	return front, back, nil
}

// NewFrontend allocates size bytes of memfd guest memory split into the
// given regions (GPA, Size, UserAddr; Offset is assigned consecutively).
func NewFrontend(conn *net.UnixConn, regions []Region) (*Frontend, error) {
	var total uint64
	for i := range regions {
		regions[i].Offset = total
		total += regions[i].Size
	}
	fd, err := unix.MemfdCreate("guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	mem, err := unix.Mmap(fd, 0, int(total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Frontend{Conn: conn, Mem: mem, MemFD: fd, Regions: regions}, nil
}

// Close hangs up and releases the memory.
func (f *Frontend) Close() {
	f.Conn.Close()
	if f.Mem != nil {
		unix.Munmap(f.Mem)
		f.Mem = nil
	}
	unix.Close(f.MemFD)
}

// Guest returns guest-physical [gpa, gpa+n) as a slice of the memfd.
func (f *Frontend) Guest(gpa, n uint64) []byte {
	for _, r := range f.Regions {
		if gpa >= r.GPA && gpa+n <= r.GPA+r.Size {
			o := r.Offset + gpa - r.GPA
			return f.Mem[o : o+n]
		}
	}
	panic(fmt.Sprintf("guest range 0x%x+%d not in memory", gpa, n))
}

// UserAddr translates a guest-physical address to the frontend address the
// protocol uses for rings.
func (f *Frontend) UserAddr(gpa uint64) uint64 {
	for _, r := range f.Regions {
		if gpa >= r.GPA && gpa < r.GPA+r.Size {
			return r.UserAddr + gpa - r.GPA
		}
	}
	panic(fmt.Sprintf("gpa 0x%x not in memory", gpa))
}

// Send writes one message with fds.
func (f *Frontend) Send(req, flags uint32, payload []byte, fds ...int) error {
	b := make([]byte, 12+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flags|FlagVersion)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[12:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := f.Conn.WriteMsgUnix(b, oob, nil)
	return err
}

// Recv reads one reply to req.
func (f *Frontend) Recv(req uint32) ([]byte, error) {
	_ = f.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer f.Conn.SetReadDeadline(time.Time{})
	var h [12]byte
	if _, err := readFull(f.Conn, h[:]); err != nil {
		return nil, fmt.Errorf("reply to %d: %w", req, err)
	}
	if got := binary.LittleEndian.Uint32(h[0:]); got != req {
		return nil, fmt.Errorf("reply to %d carries request %d", req, got)
	}
	if binary.LittleEndian.Uint32(h[4:])&FlagReply == 0 {
		return nil, errors.New("reply without the reply flag")
	}
	p := make([]byte, binary.LittleEndian.Uint32(h[8:]))
	if _, err := readFull(f.Conn, p); err != nil {
		return nil, err
	}
	return p, nil
}

func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Call sends req and waits for its reply (GET_* messages).
func (f *Frontend) Call(req uint32, payload []byte) ([]byte, error) {
	if err := f.Send(req, 0, payload); err != nil {
		return nil, err
	}
	return f.Recv(req)
}

// Do sends req asking for an acknowledgement when REPLY_ACK was negotiated
// and returns the backend's verdict.
func (f *Frontend) Do(req uint32, payload []byte, fds ...int) error {
	if f.proto&ProtocolReplyAck == 0 {
		return f.Send(req, 0, payload, fds...)
	}
	if err := f.Send(req, FlagNeedReply, payload, fds...); err != nil {
		return err
	}
	p, err := f.Recv(req)
	if err != nil {
		return err
	}
	if len(p) != 8 {
		return fmt.Errorf("ack of %d bytes", len(p))
	}
	if v := binary.LittleEndian.Uint64(p); v != 0 {
		return fmt.Errorf("backend refused request %d (%d)", req, v)
	}
	return nil
}

// U64 encodes a u64 payload.
func U64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// State encodes a vring state payload.
func State(index, num uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	return binary.LittleEndian.AppendUint32(b, num)
}

// Negotiate runs the feature handshake QEMU does and acks features
// (filtered by what the backend offers) and protocol features.
func (f *Frontend) Negotiate(features, proto uint64) (offered uint64, err error) {
	p, err := f.Call(GetFeatures, nil)
	if err != nil {
		return 0, err
	}
	offered = binary.LittleEndian.Uint64(p)
	if offered&FeatureProtocol != 0 {
		p, err := f.Call(GetProtocolFeatures, nil)
		if err != nil {
			return 0, err
		}
		proto &= binary.LittleEndian.Uint64(p)
		if err := f.Send(SetProtocolFeatures, 0, U64(proto)); err != nil {
			return 0, err
		}
		f.proto = proto
		features |= FeatureProtocol
	}
	features &= offered
	if err := f.Do(SetOwner, nil); err != nil {
		return 0, err
	}
	if err := f.Do(SetFeatures, U64(features)); err != nil {
		return 0, err
	}
	f.features = features
	return offered, nil
}

// Features returns what was acked.
func (f *Frontend) Features() uint64 { return f.features }

// MemTablePayload encodes SET_MEM_TABLE for regions.
func MemTablePayload(regions []Region) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		b = binary.LittleEndian.AppendUint64(b, r.GPA)
		b = binary.LittleEndian.AppendUint64(b, r.Size)
		b = binary.LittleEndian.AppendUint64(b, r.UserAddr)
		b = binary.LittleEndian.AppendUint64(b, r.Offset)
	}
	return b
}

// SetMemTable sends the regions with one memfd fd each.
func (f *Frontend) SetMemTable() error {
	fds := make([]int, len(f.Regions))
	for i := range fds {
		fds[i] = f.MemFD
	}
	return f.Do(SetMemTable, MemTablePayload(f.Regions), fds...)
}
