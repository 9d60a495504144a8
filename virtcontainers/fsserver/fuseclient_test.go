package fsserver

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
	opLookup     = 1
	opGetattr    = 3
	opMkdir      = 9
	opUnlink     = 10
	opOpen       = 14
	opRead       = 15
	opWrite      = 16
	opRelease    = 18
	opOpendir    = 27
	opReaddir    = 28
	opReleasedir = 29
	opCreate     = 35
)

// structBytes is the wire image of a FUSE struct.
func structBytes[T any](v *T) []byte {
	return bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}

func fromBytes[T any](b []byte) *T {
	var v T
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), b)
	return &v
}

// client is a guest FUSE driver over one request queue.
type client struct {
	q      *vut.Queue
	unique atomic.Uint64
	// split cuts readable payloads into pieces of this size (0: one piece).
	split int
}

// reply is a decoded FUSE reply.
type reply struct {
	errno syscall.Errno
	body  []byte
}

// call sends a request whose fixed part is in (after the header) with
// payload after it, offering outSize bytes for the reply body.
func (c *client) call(opcode uint32, node uint64, in []byte, payload []byte, outSize int) (reply, error) {
	h := fuse.InHeader{Opcode: opcode, NodeId: node, Unique: c.unique.Add(1)}
	h.Length = uint32(int(unsafe.Sizeof(h)) + len(in) + len(payload))
	readable := [][]byte{append(structBytes(&h), in...)}
	for len(payload) > 0 {
		k := len(payload)
		if c.split > 0 {
			k = min(k, c.split)
		}
		readable = append(readable, payload[:k])
		payload = payload[k:]
	}
	var writable []int
	if outSize >= 0 {
		writable = []int{16}
		for left := outSize; left > 0; {
			k := left
			if c.split > 0 {
				k = min(k, c.split)
			}
			writable = append(writable, k)
			left -= k
		}
	}
	out, err := c.q.Do(readable, writable)
	if err != nil {
		return reply{}, err
	}
	if outSize < 0 {
		if len(out) != 0 {
			return reply{}, fmt.Errorf("opcode %d: %d reply bytes to a request without reply", opcode, len(out))
		}
		return reply{}, nil
	}
	if len(out) < 16 {
		return reply{}, fmt.Errorf("opcode %d: reply of %d bytes", opcode, len(out))
	}
	oh := fromBytes[fuse.OutHeader](out)
	if int(oh.Length) != len(out) {
		return reply{}, fmt.Errorf("opcode %d: header says %d bytes, used length %d", opcode, oh.Length, len(out))
	}
	if oh.Unique != h.Unique {
		return reply{}, fmt.Errorf("opcode %d: reply to unique %d, sent %d", opcode, oh.Unique, h.Unique)
	}
	return reply{errno: syscall.Errno(-oh.Status), body: out[16:]}, nil
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func (c *client) init(flags uint64) (*fuse.InitOut, error) {
	in := fuse.InitIn{Major: 7, Minor: 36, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	r, err := c.call(opInit, 0, structBytes(&in)[unsafe.Sizeof(fuse.InHeader{}):], nil, int(unsafe.Sizeof(fuse.InitOut{})))
	if err != nil {
		return nil, err
	}
	if r.errno != 0 {
		return nil, fmt.Errorf("INIT: %v", r.errno)
	}
	return fromBytes[fuse.InitOut](r.body), nil
}

func (c *client) lookup(parent uint64, name string) (*fuse.EntryOut, syscall.Errno, error) {
	r, err := c.call(opLookup, parent, nil, cstr(name), int(unsafe.Sizeof(fuse.EntryOut{})))
	if err != nil || r.errno != 0 {
		return nil, r.errno, err
	}
	return fromBytes[fuse.EntryOut](r.body), 0, nil
}

func (c *client) open(node uint64, flags uint32) (fh uint64, errno syscall.Errno, err error) {
	r, err := c.call(opOpen, node, inBody(&fuse.OpenIn{Flags: flags}), nil, int(unsafe.Sizeof(fuse.OpenOut{})))
	if err != nil || r.errno != 0 {
		return 0, r.errno, err
	}
	return fromBytes[fuse.OpenOut](r.body).Fh, 0, nil
}

func (c *client) create(parent uint64, name string, mode uint32) (*fuse.EntryOut, uint64, error) {
	in := fuse.CreateIn{Flags: syscall.O_RDWR | syscall.O_CREAT, Mode: mode}
	r, err := c.call(opCreate, parent, inBody(&in), cstr(name), int(unsafe.Sizeof(fuse.CreateOut{})))
	if err != nil {
		return nil, 0, err
	}
	if r.errno != 0 {
		return nil, 0, fmt.Errorf("CREATE %s: %v", name, r.errno)
	}
	out := fromBytes[fuse.CreateOut](r.body)
	return &out.EntryOut, out.OpenOut.Fh, nil
}

// inBody is a request struct without its InHeader.
func inBody[T any](v *T) []byte { return structBytes(v)[unsafe.Sizeof(fuse.InHeader{}):] }

func (c *client) write(node, fh, off uint64, data []byte) (uint32, error) {
	in := fuse.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	r, err := c.call(opWrite, node, inBody(&in), data, int(unsafe.Sizeof(fuse.WriteOut{})))
	if err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("WRITE: %v", r.errno)
	}
	return fromBytes[fuse.WriteOut](r.body).Size, nil
}

func (c *client) read(node, fh, off uint64, size uint32) ([]byte, error) {
	in := fuse.ReadIn{Fh: fh, Offset: off, Size: size}
	r, err := c.call(opRead, node, inBody(&in), nil, int(size))
	if err != nil {
		return nil, err
	}
	if r.errno != 0 {
		return nil, fmt.Errorf("READ: %v", r.errno)
	}
	return r.body, nil
}

func (c *client) readdir(node uint64) ([]string, error) {
	r, err := c.call(opOpendir, node, inBody(&fuse.OpenIn{}), nil, int(unsafe.Sizeof(fuse.OpenOut{})))
	if err != nil {
		return nil, err
	}
	if r.errno != 0 {
		return nil, fmt.Errorf("OPENDIR: %v", r.errno)
	}
	fh := fromBytes[fuse.OpenOut](r.body).Fh
	var names []string
	off := uint64(0)
	for {
		in := fuse.ReadIn{Fh: fh, Offset: off, Size: 4096}
		r, err := c.call(opReaddir, node, inBody(&in), nil, 4096)
		if err != nil {
			return nil, err
		}
		if r.errno != 0 {
			return nil, fmt.Errorf("READDIR: %v", r.errno)
		}
		if len(r.body) == 0 {
			break
		}
		b := r.body
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
	if _, err := c.call(opReleasedir, node, inBody(&rel), nil, 0); err != nil {
		return nil, err
	}
	return names, nil
}
