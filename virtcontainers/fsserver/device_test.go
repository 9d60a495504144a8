package fsserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	fst "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsserver/fsservertest"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

const mib = 1 << 20

// fsUnderTest builds a RawFileSystem over dir and its session options.
type fsUnderTest struct {
	name string
	make func(t testing.TB, dir string) (fuse.RawFileSystem, *fuse.MountOptions)
}

func fileSystems() []fsUnderTest {
	return []fsUnderTest{
		{"loopback", func(t testing.TB, dir string) (fuse.RawFileSystem, *fuse.MountOptions) {
			root, err := fs.NewLoopbackRoot(dir)
			require.NoError(t, err)
			return fs.NewNodeFS(root, &fs.Options{}), &fuse.MountOptions{MaxWrite: 1 << 20}
		}},
		{"passthrough", func(t testing.TB, dir string) (fuse.RawFileSystem, *fuse.MountOptions) {
			p, err := passthroughfs.New(context.Background(), dir, passthroughfs.Options{AnnounceSubmounts: true})
			require.NoError(t, err)
			t.Cleanup(func() { p.Close() })
			return p, p.MountOptions()
		}},
	}
}

type session struct {
	f       *vut.Frontend
	hiprio  *vut.Queue
	clients []*fst.Client
}

// startSession serves rawFS as a virtio-fs device over vhost-user with
// nreq request queues, and negotiates like QEMU + a guest kernel.
func startSession(t testing.TB, rawFS fuse.RawFileSystem, opts *fuse.MountOptions, nreq, workers int, features uint64) *session {
	t.Helper()
	return startSessionCtx(t, context.Background(), rawFS, opts, nreq, workers, features)
}

// startSessionCtx is startSession serving under ctx.
func startSessionCtx(t testing.TB, ctx context.Context, rawFS fuse.RawFileSystem, opts *fuse.MountOptions, nreq, workers int, features uint64) *session {
	t.Helper()
	dev := NewDevice(ctx, rawFS, opts, DeviceConfig{RequestQueues: nreq})
	front, back, err := vut.NewPair()
	require.NoError(t, err)
	f, err := vut.NewFrontend(front, []vut.Region{
		{GPA: 0, Size: 32 * mib, UserAddr: 0x7f00_0000_0000},
		{GPA: 0x1_0000_0000, Size: 32 * mib, UserAddr: 0x7f00_1000_0000},
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	b := vhostuser.NewBackend(dev, vhostuser.Config{Workers: workers, InlineQueues: []int{HiprioQueue}})
	go func() { done <- b.Serve(ctx, back); back.Close() }()
	t.Cleanup(func() {
		f.Close()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("backend still running after hang-up")
		}
	})
	_, err = f.Negotiate(features, vut.ProtocolReplyAck|vut.ProtocolMQ)
	require.NoError(t, err)
	require.NoError(t, f.SetMemTable())
	s := &session{f: f}
	hq, err := f.SetupQueue(0, 64, 0, 4*mib)
	require.NoError(t, err)
	t.Cleanup(hq.Close)
	s.hiprio = hq
	for i := range nreq {
		base := uint64(0x1_0000_0000) + uint64(i)*8*mib
		q, err := f.SetupQueue(uint32(1+i), 256, base, 8*mib)
		require.NoError(t, err)
		t.Cleanup(q.Close)
		s.clients = append(s.clients, &fst.Client{Q: q})
	}
	return s
}

func TestDeviceServesFileSystem(t *testing.T) {
	for _, fsut := range fileSystems() {
		for _, tc := range []struct {
			name     string
			features uint64
			indirect bool
			split    int
			workers  int
		}{
			{"direct", vut.FeatureVersion1, false, 0, 0},
			{"indirect_split_pool", vut.FeatureVersion1 | vut.FeatureIndirect | vut.FeatureEventIdx, true, 5000, 4},
		} {
			t.Run(fsut.name+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				rawFS, opts := fsut.make(t, dir)
				s := startSession(t, rawFS, opts, 1, tc.workers, tc.features)
				c := s.clients[0]
				c.Q.UseIndirect = tc.indirect
				c.Split = tc.split

				out, err := c.Init(fst.GuestInitFlags)
				require.NoError(t, err)
				require.EqualValues(t, 7, out.Major)
				require.EqualValues(t, opts.MaxWrite, out.MaxWrite)
				flags := uint64(out.Flags) | uint64(out.Flags2)<<32
				require.Zero(t, flags&(fuse.CAP_MAP_ALIGNMENT|fuse.CAP_HAS_INODE_DAX), "DAX negotiated")
				require.Equal(t, opts.ExtraCapabilities&fuse.CAP_SUBMOUNTS != 0, flags&fuse.CAP_SUBMOUNTS != 0)

				entry, fh, err := c.Create(fuse.FUSE_ROOT_ID, "hello", 0o644)
				require.NoError(t, err)
				data := make([]byte, 300<<10)
				_, _ = rand.Read(data)
				n, err := c.Write(entry.NodeId, fh, 0, data)
				require.NoError(t, err)
				require.EqualValues(t, len(data), n)
				onHost, err := os.ReadFile(filepath.Join(dir, "hello"))
				require.NoError(t, err)
				require.True(t, bytes.Equal(data, onHost), "host file differs from what the guest wrote")

				got, err := c.Read(entry.NodeId, fh, 1000, 200<<10)
				require.NoError(t, err)
				require.True(t, bytes.Equal(data[1000:1000+200<<10], got), "read back differs")

				require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
				for i := range 40 {
					require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", fmt.Sprintf("f%02d", i)), nil, 0o644))
				}
				sub, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "sub")
				require.NoError(t, err)
				require.Zero(t, errno)
				require.True(t, sub.Attr.IsDir())
				names, err := c.ReadDir(sub.NodeId)
				require.NoError(t, err)
				sort.Strings(names)
				require.Len(t, names, 42)
				require.Equal(t, []string{".", "..", "f00"}, names[:3])

				_, errno, err = c.Lookup(fuse.FUSE_ROOT_ID, "missing")
				require.NoError(t, err)
				require.Equal(t, syscall.ENOENT, errno)

				// FORGET goes on the hiprio queue and gets no reply.
				hc := &fst.Client{Q: s.hiprio}
				fin := fuse.ForgetIn{Nlookup: 1}
				_, err = hc.Call(opForget, sub.NodeId, fst.InBody(&fin), nil, -1)
				require.NoError(t, err)
			})
		}
	}
}

func TestDeviceParallelRequests(t *testing.T) {
	for _, fsut := range fileSystems() {
		t.Run(fsut.name, func(t *testing.T) {
			dir := t.TempDir()
			rawFS, opts := fsut.make(t, dir)
			s := startSession(t, rawFS, opts, 2, 4, vut.FeatureVersion1|vut.FeatureEventIdx|vut.FeatureIndirect)
			_, err := s.clients[0].Init(fst.GuestInitFlags)
			require.NoError(t, err)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for qi, c := range s.clients {
				for g := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						name := fmt.Sprintf("q%d-g%d", qi, g)
						e, fh, err := c.Create(fuse.FUSE_ROOT_ID, name, 0o600)
						if err != nil {
							errs <- err
							return
						}
						for i := range 20 {
							payload := bytes.Repeat([]byte(name), 100+i)
							if _, err := c.Write(e.NodeId, fh, 0, payload); err != nil {
								errs <- err
								return
							}
							got, err := c.Read(e.NodeId, fh, 0, uint32(len(payload)))
							if err != nil {
								errs <- err
								return
							}
							if !bytes.Equal(got, payload) {
								errs <- fmt.Errorf("%s: read back differs", name)
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 8)
		})
	}
}

func TestDeviceHostileRequests(t *testing.T) {
	dir := t.TempDir()
	rawFS, opts := fileSystems()[1].make(t, dir)
	s := startSession(t, rawFS, opts, 1, 2, vut.FeatureVersion1)
	c := s.clients[0]
	_, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	hdr := func(op uint32, length uint32) []byte {
		h := fuse.InHeader{Opcode: op, Length: length, Unique: 77, NodeId: fuse.FUSE_ROOT_ID}
		return fst.StructBytes(&h)
	}
	for _, tc := range []struct {
		name     string
		readable [][]byte
		writable []int
		wantLen  int
		wantErr  syscall.Errno
	}{
		{"short_header", [][]byte{[]byte("0123456789")}, []int{64}, 0, 0},
		{"read_missing_body", [][]byte{hdr(fst.OpRead, 40)}, []int{64}, 16, syscall.EIO},
		{"read_huge_size_small_buffer", [][]byte{append(hdr(fst.OpRead, 80), fst.InBody(&fuse.ReadIn{Fh: 1, Size: 1 << 30})...)}, []int{16, 100}, 16, syscall.EIO},
		{"getattr_reply_buffer_too_small", [][]byte{append(hdr(fst.OpGetattr, 56), make([]byte, 16)...)}, []int{20}, 16, syscall.EIO},
		{"no_room_for_any_reply", [][]byte{append(hdr(fst.OpGetattr, 56), make([]byte, 16)...)}, []int{8}, 0, 0},
		{"unknown_opcode", [][]byte{hdr(9999, 40)}, []int{16}, 16, syscall.ENOSYS},
		{"lookup_name_not_terminated", [][]byte{hdr(fst.OpLookup, 43), []byte("abc")}, []int{16, int(unsafe.Sizeof(fuse.EntryOut{}))}, 16, syscall.ENOENT},
		{"batch_forget_count_lies", [][]byte{hdr(opBatchForget, 48), {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}}, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := c.Q.Do(tc.readable, tc.writable)
			require.NoError(t, err)
			require.Len(t, out, tc.wantLen)
			if tc.wantLen >= 16 {
				oh := fst.FromBytes[fuse.OutHeader](out)
				require.EqualValues(t, 77, oh.Unique)
				require.Equal(t, tc.wantErr, syscall.Errno(-oh.Status))
			}
		})
	}
	// Still serving.
	_, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "nothing")
	require.NoError(t, err)
	require.Equal(t, syscall.ENOENT, errno)
}

func TestDeviceAnnouncesSubmounts(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "vol")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	require.NoError(t, os.Mkdir(filepath.Join(dir, "plain"), 0o755))

	rawFS, opts := fileSystems()[1].make(t, dir)
	s := startSession(t, rawFS, opts, 1, 0, vut.FeatureVersion1)
	c := s.clients[0]
	out, err := c.Init(fst.GuestInitFlags)
	require.NoError(t, err)
	require.NotZero(t, uint64(out.Flags)&fuse.CAP_SUBMOUNTS)
	vol, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "vol")
	require.NoError(t, err)
	require.Zero(t, errno)
	require.NotZero(t, vol.Attr.Flags&fuse.ATTR_SUBMOUNT, "mount point not announced as a submount")
	plain, errno, err := c.Lookup(fuse.FUSE_ROOT_ID, "plain")
	require.NoError(t, err)
	require.Zero(t, errno)
	require.Zero(t, plain.Attr.Flags&fuse.ATTR_SUBMOUNT)
}

func TestMain(m *testing.M) {
	// As the daemon does before it serves a passthroughfs.FS (see
	// passthroughfs.New).
	syscall.Umask(0)
	os.Exit(m.Run())
}
