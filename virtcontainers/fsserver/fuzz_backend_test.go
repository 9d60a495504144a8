package fsserver

import (
	"context"
	"encoding/binary"
	"io"
	stdlog "log"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// fuzzOpcodes are the FUSE requests the fuzzer builds (any other value of
// its choosing is sent as is).
var fuzzOpcodes = []uint32{
	fst.OpLookup, opForget, fst.OpGetattr, 5 /* READLINK */, fst.OpOpen, fst.OpRead, 17 /* STATFS */, fst.OpRelease,
	22 /* GETXATTR */, 23 /* LISTXATTR */, 25 /* FLUSH */, opInit, fst.OpOpendir, fst.OpReaddir, fst.OpReleasedir,
	34 /* ACCESS */, opDestroy, opBatchForget, 44 /* READDIRPLUS */, 46 /* LSEEK */, 50, /* SYNCFS */
}

// fuzzProgram reads the fuzzer's bytes as a program for a hostile guest
// and its VMM.
type fuzzProgram struct{ b []byte }

func (p *fuzzProgram) u8() byte {
	if len(p.b) == 0 {
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return v
}

func (p *fuzzProgram) u16() uint16 { return uint16(p.u8()) | uint16(p.u8())<<8 }
func (p *fuzzProgram) u32() uint32 { return uint32(p.u16()) | uint32(p.u16())<<16 }
func (p *fuzzProgram) u64() uint64 { return uint64(p.u32()) | uint64(p.u32())<<32 }

func (p *fuzzProgram) bytes(max int) []byte {
	n := min(int(p.u8())%(max+1), len(p.b))
	v := p.b[:n]
	p.b = p.b[n:]
	return v
}

// fuzzDevice is one virtio-fs device as QEMU sets it up, over 2 × 4 MiB
// of guest memory.
type fuzzDevice struct {
	f      *vut.Frontend
	queues []*vut.Queue
	unique uint64
}

func (d *fuzzDevice) setup() error {
	for _, q := range d.queues {
		q.Close()
	}
	d.queues = nil
	if _, err := d.f.Negotiate(vut.FeatureVersion1|vut.FeatureEventIdx|vut.FeatureIndirect, vut.ProtocolReplyAck|vut.ProtocolMQ); err != nil {
		return err
	}
	if err := d.f.SetMemTable(); err != nil {
		return err
	}
	for i, gpa := range []uint64{0, 0x1_0000_0000} {
		q, err := d.f.SetupQueue(uint32(i), 16, gpa, 4*mib)
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	return nil
}

// reset is what QEMU does when the guest reboots.
func (d *fuzzDevice) reset() error {
	if err := d.f.Do(vut.ResetDevice, nil); err != nil {
		return err
	}
	return d.setup()
}

// request builds a FUSE request: header, then body.
func (d *fuzzDevice) request(op uint32, node uint64, body []byte) []byte {
	d.unique++
	h := fuse.InHeader{Opcode: op, NodeId: node, Unique: d.unique, Length: uint32(40 + len(body))}
	return append(fst.StructBytes(&h), body...)
}

func (d *fuzzDevice) initRequest() []byte {
	flags := uint64(fst.GuestInitFlags)
	in := fuse.InitIn{Major: 7, Minor: 36, MaxReadAhead: 128 << 10, Flags: uint32(flags) | fuse.CAP_INIT_EXT, Flags2: uint32(flags >> 32)}
	return d.request(opInit, 0, fst.InBody(&in))
}

var initReply = []int{16, int(unsafe.Sizeof(fuse.InitOut{}))}

// step runs one instruction of p; false ends the program.
func (d *fuzzDevice) step(p *fuzzProgram) bool {
	if len(p.b) == 0 {
		return false
	}
	q := d.queues[int(p.u8())%len(d.queues)]
	switch p.u8() % 8 {
	case 0, 1: // a FUSE request, well formed around a body of the fuzzer's choosing
		op := uint32(p.u8())
		if int(op) < len(fuzzOpcodes) {
			op = fuzzOpcodes[op]
		}
		node := uint64(p.u8() % 8)
		body := p.bytes(96)
		req := d.request(op, node, body)
		cut := min(int(p.u8()), len(req))
		readable := [][]byte{req[:cut]}
		if cut < len(req) {
			readable = append(readable, req[cut:])
		}
		if cut == 0 {
			readable = readable[1:]
		}
		var writable []int
		if n := int(p.u16() % 8192); n > 0 {
			writable = []int{min(n, 16), n}
		}
		_, _ = q.Submit(readable, writable)
	case 2: // a raw descriptor, published as a chain head
		i := p.u16() % q.Size
		q.PutDesc(q.DescGPA, i, vut.Desc{Addr: p.u64() % (0x1_0000_0000 + 8*mib), Len: p.u32() % (1 << 21), Flags: p.u16() & 7, Next: p.u16()})
		q.Publish(p.u16() % (2 * q.Size))
	case 3: // avail->idx moved to a value of the fuzzer's choosing
		binary.LittleEndian.PutUint16(d.f.Guest(q.AvailGPA+2, 2), p.u16())
		q.KickNow()
	case 4: // bytes scribbled over the rings
		off := uint64(p.u16()) % (q.UsedGPA + 4096 - q.DescGPA)
		b := p.bytes(32)
		off = min(off, q.UsedGPA+4096-q.DescGPA-uint64(len(b)))
		copy(d.f.Guest(q.DescGPA+off, uint64(len(b))), b)
		q.KickNow()
	case 5: // the guest reboots
		if d.reset() != nil {
			return false
		}
	case 6: // the VMM replaces the memory table, or stops and restarts a queue
		if p.u8()%2 == 0 {
			_ = d.f.SetMemTable()
			break
		}
		_, _ = d.f.Call(vut.GetVringBase, vut.State(q.Index, 0))
		_ = d.f.Do(vut.SetVringBase, vut.State(q.Index, uint32(p.u16())))
		_ = d.f.Do(vut.SetVringKick, vut.U64(uint64(q.Index)), q.Kick)
		_ = d.f.Do(vut.SetVringEnable, vut.State(q.Index, 1))
	case 7: // the guest starts its session
		_, _ = q.Submit([][]byte{d.initRequest()}, initReply)
	}
	return true
}

// FuzzBackendFS drives the whole virtio-fs device (vhost-user backend,
// FUSE bridge, passthrough file system over a read-only share) with a
// hostile guest and VMM: FUSE requests with bodies of the fuzzer's choosing,
// raw descriptors, moved ring indexes, scribbled rings, replaced memory
// tables, queue restarts and device resets in the middle of it all. The
// daemon must not crash, and afterwards a rebooted guest must be served:
// INIT and a LOOKUP succeed, and the backend stops when the VMM hangs up.
func FuzzBackendFS(f *testing.F) {
	f.Add([]byte{1, 0, 11, 1, 0, 0, 16, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 16})
	f.Add([]byte{1, 7, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 3, 0, 1, 5, 1, 7})
	f.Add([]byte{1, 7, 1, 3, 0xff, 0xff, 1, 5, 1, 7, 1, 0, 0, 1, 5, 'f', 'i', 'l', 'e', 0, 0, 0, 1})
	f.Add([]byte{1, 7, 0, 6, 0, 1, 6, 1, 9, 0, 1, 4, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 7})
	share := f.TempDir()
	if err := os.WriteFile(filepath.Join(share, "file"), []byte("contents"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(share, "dir"), 0o755); err != nil {
		f.Fatal(err)
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	stdlog.SetOutput(io.Discard) // go-fuse's global complaints
	f.Fuzz(func(t *testing.T, prog []byte) {
		// Every wait below is bounded: a program that still hangs the
		// daemon fails with everyone's stacks.
		watchdog := time.AfterFunc(90*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("fuzz program hung the daemon:\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		fs, err := passthroughfs.New(ctx, share, passthroughfs.Options{ReadOnly: true, AnnounceSubmounts: true})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		dev := NewDevice(ctx, fs, fs.MountOptions(), DeviceConfig{RequestQueues: 1})
		front, back, err := vut.NewPair()
		if err != nil {
			t.Fatal(err)
		}
		fr, err := vut.NewFrontend(front, []vut.Region{
			{GPA: 0, Size: 4 * mib, UserAddr: 0x7f00_0000_0000},
			{GPA: 0x1_0000_0000, Size: 4 * mib, UserAddr: 0x7f00_1000_0000},
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		b := vhostuser.NewBackend(dev, vhostuser.Config{Workers: 2, InlineQueues: []int{HiprioQueue}, DrainTimeout: 200 * time.Millisecond})
		go func() { done <- b.Serve(ctx, back); back.Close() }()
		d := &fuzzDevice{f: fr}
		defer func() {
			for _, q := range d.queues {
				q.Close()
			}
		}()
		if err := d.setup(); err != nil {
			t.Fatal(err)
		}
		p := &fuzzProgram{b: prog}
		for range 64 {
			if !d.step(p) {
				break
			}
		}
		// Still serving a guest that reboots.
		if err := d.reset(); err != nil {
			t.Fatalf("reset after the program: %v", err)
		}
		if out, err := d.queues[1].Do([][]byte{d.initRequest()}, initReply); err != nil || len(out) < 16 || binary.LittleEndian.Uint32(out[4:]) != 0 {
			t.Fatalf("INIT after the program: %v (%x)", err, out)
		}
		out, err := d.queues[1].Do([][]byte{d.request(fst.OpLookup, fuse.FUSE_ROOT_ID, fst.Cstr("file"))}, []int{16, int(unsafe.Sizeof(fuse.EntryOut{}))})
		if err != nil || len(out) < 16 || binary.LittleEndian.Uint32(out[4:]) != 0 {
			t.Fatalf("LOOKUP after the program: %v (%x)", err, out)
		}
		fr.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("backend still serving 10 s after the frontend hung up")
		}
	})
}
