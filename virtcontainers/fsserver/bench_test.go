package fsserver

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

// BenchmarkDeviceRoundTrip measures one FUSE request through the whole host
// side of the daemon (vhost-user rings in memfd memory, the bridge,
// ProtocolServer, passthroughfs) as a guest driver on the same host sees it.
func BenchmarkDeviceRoundTrip(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 1<<20)
	require.NoError(b, os.WriteFile(filepath.Join(dir, "data"), data, 0o644))
	for _, workers := range []int{0, 1, 4} {
		rawFS, opts := fileSystems()[1].make(b, dir)
		s := startSession(b, rawFS, opts, 1, workers, vut.FeatureVersion1|vut.FeatureEventIdx|vut.FeatureIndirect)
		c := s.clients[0]
		_, err := c.Init(fst.GuestInitFlags)
		require.NoError(b, err)
		e, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "data")
		require.NoError(b, err)
		require.Zero(b, errno)
		fh, errno, err := c.Open(e.NodeId, syscall.O_RDONLY)
		require.NoError(b, err)
		require.Zero(b, errno)
		name := map[int]string{0: "pool0", 1: "pool1", 4: "pool4"}[workers]
		b.Run(name+"/getattr", func(b *testing.B) {
			in := fuse.GetAttrIn{}
			for b.Loop() {
				if _, err := c.Call(fst.OpGetattr, e.NodeId, fst.InBody(&in), nil, int(sizeofAttrOut)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/lookup_create_unlink", func(b *testing.B) {
			for b.Loop() {
				if _, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "tmpfile"); err != nil || errno != syscall.ENOENT {
					b.Fatal(errno, err)
				}
				ce, cfh, err := c.Create(fuse.FUSE_ROOT_ID, "tmpfile", 0o644)
				if err != nil {
					b.Fatal(err)
				}
				rel := fuse.ReleaseIn{Fh: cfh}
				if _, err := c.Call(fst.OpRelease, ce.NodeId, fst.InBody(&rel), nil, 0); err != nil {
					b.Fatal(err)
				}
				r, err := c.Call(fst.OpUnlink, fuse.FUSE_ROOT_ID, nil, fst.Cstr("tmpfile"), 0)
				if err != nil || r.Errno != 0 {
					b.Fatal(r.Errno, err)
				}
				fin := fuse.ForgetIn{Nlookup: 1}
				if _, err := (&fst.Client{Q: s.hiprio}).Call(fst.OpForget, ce.NodeId, fst.InBody(&fin), nil, -1); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/read128KiB", func(b *testing.B) {
			b.SetBytes(128 << 10)
			for b.Loop() {
				if _, err := c.Read(e.NodeId, fh, 0, 128<<10); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const sizeofAttrOut = 104

// BenchmarkDeviceHandle measures the daemon side of one request alone: the
// bridge, ProtocolServer and a file system that does nothing, without
// rings or notifications.
func BenchmarkDeviceHandle(b *testing.B) {
	dev := initedDevice(b, &forgetSpy{RawFileSystem: fuse.NewDefaultRawFileSystem()})
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		in   []byte
		out  int
	}{
		{"forget", request(fst.OpForget, 7, forgetBody(1)), 0},
		{"batch_forget16", request(fst.OpBatchForget, 0, batch(16, make([][2]uint64, 16)...)), 0},
		{"getattr", request(fst.OpGetattr, 1, fst.InBody(&fuse.GetAttrIn{})), 16 + sizeofAttrOut},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := &vhostuser.Chain{Readable: [][]byte{bc.in}}
			if bc.out > 0 {
				c.Writable = [][]byte{make([]byte, bc.out)}
			}
			b.ReportAllocs()
			for b.Loop() {
				dev.Handle(ctx, 1, c)
			}
		})
	}
}
