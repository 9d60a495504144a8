package fsserver

import (
	"context"
	"encoding/binary"
	"io"
	stdlog "log"
	"testing"
	"unsafe"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
)

// FuzzDeviceRequest sends guest bytes of the fuzzer's choosing, cut into
// descriptors at its chosen points, through the FUSE decoder of the device
// (go-fuse's ProtocolServer plus the bridge) to a file system that answers
// ENOSYS. It must never panic or write past the reply buffers, and a reply
// must be a well-formed FUSE header.
func FuzzDeviceRequest(f *testing.F) {
	seed := func(op uint32, body []byte) []byte {
		h := fuse.InHeader{Opcode: op, Unique: 1, NodeId: 1, Length: uint32(40 + len(body))}
		return append(fst.StructBytes(&h), body...)
	}
	f.Add(seed(fst.OpLookup, []byte("name\x00")), uint16(0), uint16(200))
	f.Add(seed(fst.OpWrite, append(fst.InBody(&fuse.WriteIn{Size: 5}), "hello"...)), uint16(45), uint16(16))
	f.Add(seed(fst.OpRead, fst.InBody(&fuse.ReadIn{Size: 4096})), uint16(40), uint16(4200))
	f.Add(seed(opBatchForget, []byte{2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}), uint16(0), uint16(0))
	f.Add(seed(opInit, fst.InBody(&fuse.InitIn{Major: 7, Minor: 36})), uint16(10), uint16(100))

	opts := &fuse.MountOptions{MaxWrite: 1 << 20, Logger: stdlog.New(io.Discard, "", 0)}
	dev := NewDevice(context.Background(), fuse.NewDefaultRawFileSystem(), opts, DeviceConfig{})
	// Requests before INIT only get EIO: start a session so the inputs
	// reach go-fuse's decoders.
	initOut := make([]byte, 16+unsafe.Sizeof(fuse.InitOut{}))
	if n := dev.Handle(context.Background(), 1, &vhostuser.Chain{
		Readable: [][]byte{seed(opInit, fst.InBody(&fuse.InitIn{Major: 7, Minor: 36}))},
		Writable: [][]byte{initOut},
	}); n < 16 || binary.LittleEndian.Uint32(initOut[4:]) != 0 {
		f.Fatalf("INIT failed: %d bytes, %x", n, initOut[:16])
	}
	f.Fuzz(func(t *testing.T, in []byte, cut, outSize uint16) {
		c := &vhostuser.Chain{}
		k := min(int(cut), len(in))
		if k > 0 {
			c.Readable = append(c.Readable, in[:k])
		}
		if k < len(in) {
			c.Readable = append(c.Readable, in[k:])
		}
		// Guard bytes after each reply buffer catch writes past its end.
		const guard = 32
		backing := make([]byte, int(outSize)+guard)
		for i := range backing {
			backing[i] = 0xa5
		}
		half := int(outSize) / 2
		c.Writable = [][]byte{backing[:half:half], backing[half:outSize:outSize]}
		n := dev.Handle(context.Background(), 1, c)
		if int(n) > int(outSize) {
			t.Fatalf("reply of %d bytes in %d", n, outSize)
		}
		for _, b := range backing[outSize:] {
			if b != 0xa5 {
				t.Fatal("reply written past its buffer")
			}
		}
		if n > 0 {
			if n < 16 {
				t.Fatalf("reply of %d bytes is shorter than a FUSE header", n)
			}
			if l := binary.LittleEndian.Uint32(backing); l != n {
				t.Fatalf("reply header says %d bytes, wrote %d", l, n)
			}
		}
	})
}

var _ = unsafe.Sizeof(0)
