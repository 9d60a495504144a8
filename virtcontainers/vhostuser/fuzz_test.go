package vhostuser

import (
	"context"
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// FuzzWalkChain feeds guest memory of the fuzzer's choosing to the
// descriptor-chain walker: it must never panic, and a chain it accepts must
// lie in guest memory and within the limits.
func FuzzWalkChain(f *testing.F) {
	const base = 0x10000
	seed := make([]byte, 16*4+64)
	put := func(i int, addr uint64, n uint32, flags, next uint16) {
		binary.LittleEndian.PutUint64(seed[16*i:], addr)
		binary.LittleEndian.PutUint32(seed[16*i+8:], n)
		binary.LittleEndian.PutUint16(seed[16*i+12:], flags)
		binary.LittleEndian.PutUint16(seed[16*i+14:], next)
	}
	put(0, base+64, 8, descFlagNext, 1)
	put(1, base+72, 8, descFlagNext|descFlagWrite, 2)
	put(2, base+80, 16, descFlagWrite, 0)
	put(3, base+16, 32, descFlagIndir, 0)
	f.Add(seed, uint16(4), uint16(0), true)
	f.Add(seed, uint16(4), uint16(3), true)
	f.Add(seed, uint16(4), uint16(3), false)
	f.Fuzz(func(t *testing.T, mem []byte, num, head uint16, indirect bool) {
		if num == 0 || num&(num-1) != 0 || num > 256 {
			return
		}
		if len(mem) < 16*int(num) {
			mem = append(mem, make([]byte, 16*int(num)-len(mem))...)
		}
		head %= num
		table := newMemTable([]region{{regionDesc: regionDesc{GuestPhysAddr: base, Size: uint64(len(mem))}, mem: mem}})
		lim := Limits{MaxReadable: 1000, MaxWritable: 2000}
		var c Chain
		if err := walkChain(table, mem[:16*int(num)], num, head, indirect, lim, &c); err != nil {
			return
		}
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
		hi := lo + uintptr(len(mem))
		check := func(iov [][]byte, limit uint64) {
			var total uint64
			for _, b := range iov {
				if len(b) == 0 {
					continue
				}
				p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
				if p < lo || p+uintptr(len(b)) > hi {
					t.Fatalf("buffer %#x+%d outside guest memory %#x..%#x", p, len(b), lo, hi)
				}
				total += uint64(len(b))
			}
			if total > limit {
				t.Fatalf("chain of %d bytes exceeds limit %d", total, limit)
			}
		}
		check(c.Readable, lim.MaxReadable)
		check(c.Writable, lim.MaxWritable)
	})
}

// FuzzMessages feeds a stream of frontend messages (without fds) through the
// header decoder and the backend's state machine.
func FuzzMessages(f *testing.F) {
	msg := func(req uint32, payload ...byte) []byte {
		b := make([]byte, headerSize, headerSize+len(payload))
		encodeHeader(b, header{Request: req, Flags: flagVersion | flagNeedReply, Size: uint32(len(payload))})
		return append(b, payload...)
	}
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	var stream []byte
	stream = append(stream, msg(reqGetFeatures)...)
	stream = append(stream, msg(reqSetProtocolFeatures, le64(ProtocolReplyAck)...)...)
	stream = append(stream, msg(reqSetFeatures, le64(FeatureVersion1|FeatureProtocolFeatures)...)...)
	stream = append(stream, msg(reqSetVringNum, 1, 0, 0, 0, 0, 1, 0, 0)...)
	stream = append(stream, msg(reqSetVringAddr, make([]byte, vringAddrSize)...)...)
	stream = append(stream, msg(reqSetVringBase, 1, 0, 0, 0, 5, 0, 0, 0)...)
	stream = append(stream, msg(reqSetMemTable, append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 32)...)...)...)
	stream = append(stream, msg(reqAddMemReg, make([]byte, memRegMsgSize)...)...)
	stream = append(stream, msg(reqSetVringEnable, 1, 0, 0, 0, 1, 0, 0, 0)...)
	stream = append(stream, msg(reqSetVringKick, le64(1|vringFDInvalid)...)...)
	stream = append(stream, msg(reqGetVringBase, 1, 0, 0, 0, 0, 0, 0, 0)...)
	stream = append(stream, msg(reqResetDevice)...)
	f.Add(stream)
	logger := logrus.New()
	logger.SetLevel(logrus.PanicLevel)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	f.Fuzz(func(t *testing.T, stream []byte) {
		b := NewBackend(&echoDevice{queues: 2, lim: bigLimits()}, Config{})
		defer b.shutdown(ctx)
		for len(stream) >= headerSize {
			h, err := decodeHeader(stream)
			if err != nil {
				return
			}
			stream = stream[headerSize:]
			if int(h.Size) > len(stream) {
				return
			}
			m := message{header: h, payload: stream[:h.Size]}
			stream = stream[h.Size:]
			_, _ = b.handle(ctx, &m)
		}
	})
}
