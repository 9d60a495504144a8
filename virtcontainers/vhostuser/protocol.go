package vhostuser

import (
	"encoding/binary"
	"fmt"

	"github.com/containerd/errdefs"
)

// Request codes sent by the frontend (vhost-user.rst, "Front-end message types").
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetLogBase          = 6
	reqSetLogFD            = 7
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
	reqSetBackendReqFD     = 21
	reqResetDevice         = 34
	reqGetMaxMemSlots      = 36
	reqAddMemReg           = 37
	reqRemMemReg           = 38
)

var requestNames = map[uint32]string{
	reqGetFeatures: "GET_FEATURES", reqSetFeatures: "SET_FEATURES", reqSetOwner: "SET_OWNER",
	reqResetOwner: "RESET_OWNER", reqSetMemTable: "SET_MEM_TABLE", reqSetLogBase: "SET_LOG_BASE",
	reqSetLogFD: "SET_LOG_FD", reqSetVringNum: "SET_VRING_NUM", reqSetVringAddr: "SET_VRING_ADDR",
	reqSetVringBase: "SET_VRING_BASE", reqGetVringBase: "GET_VRING_BASE", reqSetVringKick: "SET_VRING_KICK",
	reqSetVringCall: "SET_VRING_CALL", reqSetVringErr: "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES", reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum: "GET_QUEUE_NUM", reqSetVringEnable: "SET_VRING_ENABLE",
	reqSetBackendReqFD: "SET_BACKEND_REQ_FD", reqResetDevice: "RESET_DEVICE",
	reqGetMaxMemSlots: "GET_MAX_MEM_SLOTS", reqAddMemReg: "ADD_MEM_REG", reqRemMemReg: "REM_MEM_REG",
}

func requestName(code uint32) string {
	if n, ok := requestNames[code]; ok {
		return n
	}
	return fmt.Sprintf("request(%d)", code)
}

// Header flags.
const (
	flagVersion   = 0x1
	flagVersionMk = 0x3
	flagReply     = 0x4
	flagNeedReply = 0x8
)

// Virtio feature bits this backend can offer.
const (
	FeatureRingIndirectDesc = 1 << 28
	FeatureRingEventIdx     = 1 << 29
	FeatureProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	FeatureVersion1         = 1 << 32
)

// Protocol feature bits (VHOST_USER_PROTOCOL_F_*).
const (
	ProtocolMQ                = 1 << 0
	ProtocolReplyAck          = 1 << 3
	ProtocolResetDevice       = 1 << 13
	ProtocolConfigureMemSlots = 1 << 15
)

const (
	headerSize = 12
	// maxPayload bounds one message: the largest we accept (SET_MEM_TABLE
	// with maxTableRegions) is far smaller.
	maxPayload      = 4096
	maxTableRegions = 8  // VHOST_MEMORY_BASELINE_NREGIONS
	maxMemSlots     = 32 // what GET_MAX_MEM_SLOTS answers
	maxQueueSize    = 32768
	vringFDInvalid  = 1 << 8 // SET_VRING_KICK/CALL/ERR: no fd sent
	vringIndexMask  = 0xff
	regionDescSize  = 32
	vringAddrSize   = 40
	vringStateSize  = 8
	u64PayloadSize  = 8
	memRegMsgSize   = 8 + regionDescSize
	memTableHdrSize = 8
)

// header is the fixed part of every message.
type header struct {
	Request uint32
	Flags   uint32
	Size    uint32
}

func (h header) needReply() bool { return h.Flags&flagNeedReply != 0 }

func decodeHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("vhost-user header: %d bytes, want %d: %w", len(b), headerSize, errdefs.ErrInvalidArgument)
	}
	h := header{
		Request: binary.LittleEndian.Uint32(b[0:]),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
	if h.Flags&flagVersionMk != flagVersion {
		return h, fmt.Errorf("vhost-user header of %s: version %d, want 1: %w", requestName(h.Request), h.Flags&flagVersionMk, errdefs.ErrInvalidArgument)
	}
	if h.Size > maxPayload {
		return h, fmt.Errorf("vhost-user %s: payload of %d bytes exceeds %d: %w", requestName(h.Request), h.Size, maxPayload, errdefs.ErrInvalidArgument)
	}
	return h, nil
}

func encodeHeader(b []byte, h header) {
	binary.LittleEndian.PutUint32(b[0:], h.Request)
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Size)
}

// regionDesc is VhostUserMemoryRegion.
type regionDesc struct {
	GuestPhysAddr uint64
	Size          uint64
	UserAddr      uint64
	MmapOffset    uint64
}

func decodeRegion(b []byte) regionDesc {
	return regionDesc{
		GuestPhysAddr: binary.LittleEndian.Uint64(b[0:]),
		Size:          binary.LittleEndian.Uint64(b[8:]),
		UserAddr:      binary.LittleEndian.Uint64(b[16:]),
		MmapOffset:    binary.LittleEndian.Uint64(b[24:]),
	}
}

func (r regionDesc) validate() error {
	if r.Size == 0 {
		return fmt.Errorf("memory region at guest 0x%x: size 0: %w", r.GuestPhysAddr, errdefs.ErrInvalidArgument)
	}
	if r.GuestPhysAddr+r.Size < r.GuestPhysAddr || r.UserAddr+r.Size < r.UserAddr || r.MmapOffset+r.Size < r.MmapOffset {
		return fmt.Errorf("memory region at guest 0x%x size 0x%x: address range wraps: %w", r.GuestPhysAddr, r.Size, errdefs.ErrInvalidArgument)
	}
	if r.Size > 1<<46 {
		return fmt.Errorf("memory region at guest 0x%x: size 0x%x too large: %w", r.GuestPhysAddr, r.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

func decodeMemTable(p []byte) ([]regionDesc, error) {
	if len(p) < memTableHdrSize {
		return nil, fmt.Errorf("SET_MEM_TABLE: payload %d bytes: %w", len(p), errdefs.ErrInvalidArgument)
	}
	n := binary.LittleEndian.Uint32(p)
	if n == 0 || n > maxTableRegions {
		return nil, fmt.Errorf("SET_MEM_TABLE: %d regions, want 1..%d: %w", n, maxTableRegions, errdefs.ErrInvalidArgument)
	}
	// QEMU sends the full array of maxTableRegions; accept either size.
	if len(p) < memTableHdrSize+int(n)*regionDescSize {
		return nil, fmt.Errorf("SET_MEM_TABLE: %d regions need %d bytes, got %d: %w", n, memTableHdrSize+int(n)*regionDescSize, len(p), errdefs.ErrInvalidArgument)
	}
	regions := make([]regionDesc, n)
	for i := range regions {
		regions[i] = decodeRegion(p[memTableHdrSize+i*regionDescSize:])
		if err := regions[i].validate(); err != nil {
			return nil, fmt.Errorf("SET_MEM_TABLE: %w", err)
		}
	}
	return regions, nil
}

func decodeMemReg(p []byte, what string) (regionDesc, error) {
	if len(p) != memRegMsgSize {
		return regionDesc{}, fmt.Errorf("%s: payload %d bytes, want %d: %w", what, len(p), memRegMsgSize, errdefs.ErrInvalidArgument)
	}
	r := decodeRegion(p[8:])
	if err := r.validate(); err != nil {
		return r, fmt.Errorf("%s: %w", what, err)
	}
	return r, nil
}

// vringState is the payload of SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE
// and SET_VRING_ENABLE.
type vringState struct {
	Index uint32
	Num   uint32
}

func decodeVringState(p []byte, what string) (vringState, error) {
	if len(p) != vringStateSize {
		return vringState{}, fmt.Errorf("%s: payload %d bytes, want %d: %w", what, len(p), vringStateSize, errdefs.ErrInvalidArgument)
	}
	return vringState{Index: binary.LittleEndian.Uint32(p), Num: binary.LittleEndian.Uint32(p[4:])}, nil
}

// vringAddr is the payload of SET_VRING_ADDR: ring addresses in the
// frontend's virtual address space.
type vringAddr struct {
	Index    uint32
	Flags    uint32
	Desc     uint64
	Used     uint64
	Avail    uint64
	LogGuest uint64
}

const vringAddrFlagLog = 1

func decodeVringAddr(p []byte) (vringAddr, error) {
	if len(p) != vringAddrSize {
		return vringAddr{}, fmt.Errorf("SET_VRING_ADDR: payload %d bytes, want %d: %w", len(p), vringAddrSize, errdefs.ErrInvalidArgument)
	}
	return vringAddr{
		Index:    binary.LittleEndian.Uint32(p),
		Flags:    binary.LittleEndian.Uint32(p[4:]),
		Desc:     binary.LittleEndian.Uint64(p[8:]),
		Used:     binary.LittleEndian.Uint64(p[16:]),
		Avail:    binary.LittleEndian.Uint64(p[24:]),
		LogGuest: binary.LittleEndian.Uint64(p[32:]),
	}, nil
}

func decodeU64(p []byte, what string) (uint64, error) {
	if len(p) != u64PayloadSize {
		return 0, fmt.Errorf("%s: payload %d bytes, want %d: %w", what, len(p), u64PayloadSize, errdefs.ErrInvalidArgument)
	}
	return binary.LittleEndian.Uint64(p), nil
}
