package fsservertest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// FUSE opcodes (include/uapi/linux/fuse.h) the tests send.
const (
	OpLookup      = 1
	OpForget      = 2
	OpGetattr     = 3
	OpMkdir       = 9
	OpUnlink      = 10
	OpOpen        = 14
	OpRead        = 15
	OpWrite       = 16
	OpRelease     = 18
	OpOpendir     = 27
	OpReaddir     = 28
	OpReleasedir  = 29
	OpInit        = 26
	OpCreate      = 35
	OpDestroy     = 38
	OpBatchForget = 42
)

// GuestInitFlags are the capabilities a Linux guest offers in INIT.
const GuestInitFlags = fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_MAX_PAGES | fuse.CAP_READDIRPLUS |
	fuse.CAP_SUBMOUNTS | fuse.CAP_MAP_ALIGNMENT | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_HAS_INODE_DAX

// StructBytes is the wire image of a FUSE struct.
func StructBytes[T any](v *T) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}

// FromBytes reads a FUSE struct from its wire image.
func FromBytes[T any](b []byte) *T {
	var v T
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), b)
	return &v
}

// Client is a guest FUSE driver over one request queue.
type Client struct {
	Q      *vut.Queue
	unique atomic.Uint64
	// Split cuts readable payloads into pieces of this size (0: one piece).
	Split int
}

// Reply is a decoded FUSE reply.
type Reply struct {
	Errno syscall.Errno
	Body  []byte
}

// call sends a request whose fixed part is in (after the header) with
// payload after it, offering outSize bytes for the reply body.
func (c *Client) Call(opcode uint32, node uint64, in []byte, payload []byte, outSize int) (Reply, error) {
	h := fuse.InHeader{Opcode: opcode, NodeId: node, Unique: c.unique.Add(1)}
	h.Length = uint32(int(unsafe.Sizeof(h)) + len(in) + len(payload))
	readable := [][]byte{append(StructBytes(&h), in...)}
	for len(payload) > 0 {
		k := len(payload)
		if c.Split > 0 {
			k = min(k, c.Split)
		}
		readable = append(readable, payload[:k])
		payload = payload[k:]
	}
	var writable []int
	if outSize >= 0 {
		writable = []int{16}
		for left := outSize; left > 0; {
			k := left
			if c.Split > 0 {
				k = min(k, c.Split)
			}
			writable = append(writable, k)
			left -= k
		}
	}
	out, err := c.Q.Do(readable, writable)
	if err != nil {
		return Reply{}, err
	}
	if outSize < 0 {
		if len(out) != 0 {
			return Reply{}, fmt.Errorf("opcode %d: %d reply bytes to a request without reply", opcode, len(out))
		}
		return Reply{}, nil
	}
	if len(out) < 16 {
		return Reply{}, fmt.Errorf("opcode %d: reply of %d bytes", opcode, len(out))
	}
	oh := FromBytes[fuse.OutHeader](out)
	if int(oh.Length) != len(out) {
		return Reply{}, fmt.Errorf("opcode %d: header says %d bytes, used length %d", opcode, oh.Length, len(out))
	}
	if oh.Unique != h.Unique {
		return Reply{}, fmt.Errorf("opcode %d: reply to unique %d, sent %d", opcode, oh.Unique, h.Unique)
	}
	return Reply{Errno: syscall.Errno(-oh.Status), Body: out[16:]}, nil
}

// Cstr is s as the kernel sends a name: NUL-terminated.
func Cstr(s string) []byte { return append([]byte(s), 0) }

// Init sends INIT as a guest speaking protocol 7.36 with flags.
func (c *Client) Init(flags uint64) (*fuse.InitOut, error) {
	in := fuse.InitIn{Major: 7, Minor: 36, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	r, err := c.Call(OpInit, 0, StructBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):], nil, int(unsafe.Sizeof(fuse.InitOut{})))
	if err != nil {
		return nil, err
	}
	if r.Errno != 0 {
		return nil, fmt.Errorf("INIT: %w", r.Errno)
	}
	return FromBytes[fuse.InitOut](r.Body), nil
}

// Lookup looks name up in parent.
func (c *Client) Lookup(parent uint64, name string) (*fuse.EntryOut, syscall.Errno, error) {
	r, err := c.Call(OpLookup, parent, nil, Cstr(name), int(unsafe.Sizeof(fuse.EntryOut{})))
	if err != nil || r.Errno != 0 {
		return nil, r.Errno, err
	}
	return FromBytes[fuse.EntryOut](r.Body), 0, nil
}

// Open opens node with flags.
func (c *Client) Open(node uint64, flags uint32) (fh uint64, errno syscall.Errno, err error) {
	r, err := c.Call(OpOpen, node, InBody(&fuse.OpenIn{Flags: flags}), nil, int(unsafe.Sizeof(fuse.OpenOut{})))
	if err != nil || r.Errno != 0 {
		return 0, r.Errno, err
	}
	return FromBytes[fuse.OpenOut](r.Body).Fh, 0, nil
}

// Create creates and opens name in parent.
func (c *Client) Create(parent uint64, name string, mode uint32) (*fuse.EntryOut, uint64, error) {
	in := fuse.CreateIn{Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: mode}
	r, err := c.Call(OpCreate, parent, InBody(&in), Cstr(name), int(unsafe.Sizeof(fuse.CreateOut{})))
	if err != nil {
		return nil, 0, err
	}
	if r.Errno != 0 {
		return nil, 0, fmt.Errorf("CREATE %s: %w", name, r.Errno)
	}
	out := FromBytes[fuse.CreateOut](r.Body)
	return &out.EntryOut, out.OpenOut.Fh, nil
}

// InBody is a request struct without its InHeader.
func InBody[T any](v *T) []byte { return StructBytes(v)[unsafe.Sizeof(fuse.InHeader{}):] }

// Write writes data to fh at off.
func (c *Client) Write(node, fh, off uint64, data []byte) (uint32, error) {
	in := fuse.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	r, err := c.Call(OpWrite, node, InBody(&in), data, int(unsafe.Sizeof(fuse.WriteOut{})))
	if err != nil {
		return 0, err
	}
	if r.Errno != 0 {
		return 0, fmt.Errorf("WRITE: %w", r.Errno)
	}
	return FromBytes[fuse.WriteOut](r.Body).Size, nil
}

// Read reads size bytes of fh at off.
func (c *Client) Read(node, fh, off uint64, size uint32) ([]byte, error) {
	in := fuse.ReadIn{Fh: fh, Offset: off, Size: size}
	r, err := c.Call(OpRead, node, InBody(&in), nil, int(size))
	if err != nil {
		return nil, err
	}
	if r.Errno != 0 {
		return nil, fmt.Errorf("READ: %w", r.Errno)
	}
	return r.Body, nil
}

// ReadDir lists node: OPENDIR, READDIR to the end, RELEASEDIR.
func (c *Client) ReadDir(node uint64) ([]string, error) {
	r, err := c.Call(OpOpendir, node, InBody(&fuse.OpenIn{}), nil, int(unsafe.Sizeof(fuse.OpenOut{})))
	if err != nil {
		return nil, err
	}
	if r.Errno != 0 {
		return nil, fmt.Errorf("OPENDIR: %w", r.Errno)
	}
	fh := FromBytes[fuse.OpenOut](r.Body).Fh
	var names []string
	off := uint64(0)
	for {
		in := fuse.ReadIn{Fh: fh, Offset: off, Size: 4096}
		r, err := c.Call(OpReaddir, node, InBody(&in), nil, 4096)
		if err != nil {
			return nil, err
		}
		if r.Errno != 0 {
			return nil, fmt.Errorf("READDIR: %w", r.Errno)
		}
		if len(r.Body) == 0 {
			break
		}
		b := r.Body
		for len(b) >= 24 {
			next := binary.LittleEndian.Uint64(b[8:])
			nameLen := int(binary.LittleEndian.Uint32(b[16:]))
			if 24+nameLen > len(b) {
				return nil, fmt.Errorf("READDIR: entry overruns reply")
			}
			names = append(names, string(b[24:24+nameLen]))
			off = next
			rec := (24 + nameLen + 7) &^ 7
			if rec > len(b) {
				break
			}
			b = b[rec:]
		}
	}
	rel := fuse.ReleaseIn{Fh: fh}
	if _, err := c.Call(OpReleasedir, node, InBody(&rel), nil, 0); err != nil {
		return nil, err
	}
	return names, nil
}

// Getattr sends GETATTR on the root.
func (c *Client) Getattr() (syscall.Errno, error) {
	r, err := c.Call(OpGetattr, fuse.FUSE_ROOT_ID, InBody(&fuse.GetAttrIn{}), nil, int(unsafe.Sizeof(fuse.AttrOut{})))
	return r.Errno, err
}

// InitVersion sends INIT with the protocol version given.
func (c *Client) InitVersion(major, minor uint32, flags uint64) (syscall.Errno, error) {
	in := fuse.InitIn{Major: major, Minor: minor, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	r, err := c.Call(OpInit, 0, InBody(&in), nil, int(unsafe.Sizeof(fuse.InitOut{})))
	return r.Errno, err
}
