package passthroughfs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/containerd/log"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// These tests play the guest kernel: a buggy one forgets a submount root's
// node ID and goes on using it; a fixed one forgets it only when unused.

// volumeShare is a share with n tmpfs volumes vol0..vol<n-1>, each holding
// a file "marker" with its name.
type volumeShare struct {
	hostShare
	vols []string
}

func newVolumeShare(t *testing.T, n int) volumeShare {
	t.Helper()
	testutil.RequiresRoot(t)
	s := volumeShare{hostShare: newHostShare(t)}
	for i := 0; i < n; i++ {
		s.vols = append(s.vols, s.mountVolume(t, fmt.Sprintf("vol%d", i)))
	}
	return s
}

// mountVolume mounts a tmpfs at name in the share (creating the directory)
// with a marker file naming it.
func (s volumeShare) mountVolume(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(s.src, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "marker"), []byte(name), 0o644))
	return dir
}

// recoverFS is an FS with recovery on, its log and the reports it made.
type recoverFS struct {
	*FS
	logs    *bytes.Buffer
	mu      sync.Mutex
	reports []RecoveryStats
}

func newRecoverFS(t *testing.T, src string, ro RecoverOptions) *recoverFS {
	t.Helper()
	r := &recoverFS{logs: &bytes.Buffer{}}
	logger := logrus.New()
	logger.SetOutput(&lockedWriter{w: r.logs})
	logger.SetFormatter(&logrus.JSONFormatter{})
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger).WithField("sandbox", "sb-test"))
	ro.Report = func(s RecoveryStats) {
		r.mu.Lock()
		r.reports = append(r.reports, s)
		r.mu.Unlock()
	}
	fs, err := New(ctx, src, Options{AnnounceSubmounts: true, Recover: &ro})
	require.NoError(t, err)
	r.FS = fs
	t.Cleanup(func() { fs.Close() })
	return r
}

// logLines returns the JSON log lines whose message contains msg.
func (r *recoverFS) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range bytes.Split(r.logs.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(line, &m))
		if s, _ := m["msg"].(string); bytes.Contains([]byte(s), []byte(msg)) {
			out = append(out, m)
		}
	}
	return out
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func getattr(fs *FS, nodeid uint64) (fuse.AttrOut, fuse.Status) {
	var out fuse.AttrOut
	st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(nodeid)}, &out)
	return out, st
}

func requireAttr(t *testing.T, fs *FS, nodeid uint64, path string) {
	t.Helper()
	a, st := getattr(fs, nodeid)
	require.Equal(t, fuse.OK, st, "getattr %d", nodeid)
	require.Equal(t, inoOf(t, path), a.Ino, "node %d is %s", nodeid, path)
}

func readMarker(t *testing.T, fs *FS, dir uint64) string {
	t.Helper()
	e := mustLookup(t, fs, dir, "marker")
	defer fs.Forget(e.NodeId, 1)
	var oo fuse.OpenOut
	require.Equal(t, fuse.OK, fs.Open(nil, &fuse.OpenIn{InHeader: hdr(e.NodeId), Flags: unix.O_RDONLY}, &oo))
	defer fs.Release(nil, &fuse.ReleaseIn{InHeader: hdr(e.NodeId), Fh: oo.Fh})
	buf := make([]byte, 64)
	res, st := fs.Read(nil, &fuse.ReadIn{InHeader: hdr(e.NodeId), Fh: oo.Fh, Size: 64}, buf)
	require.Equal(t, fuse.OK, st)
	b, st := res.Bytes(buf)
	require.Equal(t, fuse.OK, st)
	res.Done()
	return string(b)
}

// openFDs counts this process's descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

var identities = []struct {
	name      string
	noHandles bool
}{
	{"file handle", false},
	{"descriptor", true},
}

func TestRecoverBuggyKernel(t *testing.T) {
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			share := newVolumeShare(t, 1)
			fds := openFDs(t)
			fs := newRecoverFS(t, share.src, RecoverOptions{noHandles: id.noHandles})

			v := mustLookup(t, fs.FS, rootID, "vol0")
			require.NotZero(t, v.Attr.Flags&fuse.ATTR_SUBMOUNT, "announced")
			n := v.NodeId
			ino := fs.inodes.get(n)
			require.Equal(t, !id.noHandles, ino.handle() != nil, "file handle kept only when used")
			ino.release()
			// The guest's submount root reuses n with no lookup of its own.
			require.Equal(t, "vol0", readMarker(t, fs.FS, n))

			// The parent's inode is evicted: FORGET takes n's only lookup.
			fs.Forget(n, 1)
			require.Nil(t, fs.inodes.get(n), "out of the inode table")
			s := fs.RecoveryStats()
			require.EqualValues(t, 1, s.Forgotten)
			require.Equal(t, 1, s.Held)
			require.Equal(t, map[bool]int{false: 0, true: 1}[id.noHandles], s.HeldByFD)
			require.Zero(t, s.Recoveries)

			// The submount goes on: the request is served under n.
			requireAttr(t, fs.FS, n, share.vols[0])
			c, ok := fs.inodes.lookupCount(n)
			require.True(t, ok)
			require.Zero(t, c, "the buggy kernel's submount root holds no lookup")
			require.Equal(t, "vol0", readMarker(t, fs.FS, n))
			requireAttr(t, fs.FS, n, share.vols[0])
			s = fs.RecoveryStats()
			require.EqualValues(t, 1, s.Recoveries, "one recovery however many requests")
			require.Equal(t, 1, s.Held)
			require.Equal(t, 1, s.HeldByFD, "a recovered root is live: one descriptor")

			lines := fs.logLines(t, "reinstated it")
			require.Len(t, lines, 1, "each recovery logged once")
			require.Equal(t, "sb-test", lines[0]["sandbox"])
			require.EqualValues(t, n, lines[0]["nodeid"])
			require.Equal(t, "/vol0", lines[0]["path"])
			require.Equal(t, id.name, lines[0]["identity"])

			// The guest looks the directory up again (a new automount):
			// same node ID, now counted; its FORGET leaves the node
			// served for the old submount, without another recovery.
			again := mustLookup(t, fs.FS, rootID, "vol0")
			require.Equal(t, n, again.NodeId)
			require.EqualValues(t, 1, count(t, fs.FS, n))
			fs.Forget(n, 1)
			requireAttr(t, fs.FS, n, share.vols[0])
			fs.Forget(n, 5) // owes nothing: ignored
			requireAttr(t, fs.FS, n, share.vols[0])
			s = fs.RecoveryStats()
			require.EqualValues(t, 1, s.Recoveries)
			require.EqualValues(t, 1, s.Forgotten)

			// Node IDs keep counting up.
			f := mustLookup(t, fs.FS, n, "marker")
			require.Greater(t, f.NodeId, n)

			fs.Close()
			require.Len(t, fs.logLines(t, "totals at exit"), 1)
			fs.mu.Lock()
			last := fs.reports[len(fs.reports)-1]
			fs.mu.Unlock()
			require.EqualValues(t, 1, last.Recoveries, "final report")
			require.Equal(t, fds, openFDs(t), "every descriptor closed")
		})
	}
}

func TestRecoverFixedKernel(t *testing.T) {
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			share := newVolumeShare(t, 1)
			fs := newRecoverFS(t, share.src, RecoverOptions{noHandles: id.noHandles})

			// A fixed kernel's submount root shares the parent's lookup:
			// the node ID is forgotten only once nothing uses it.
			v := mustLookup(t, fs.FS, rootID, "vol0")
			require.Equal(t, "vol0", readMarker(t, fs.FS, v.NodeId))
			// A LOOKUP answered before an older FORGET arrives.
			require.Equal(t, v.NodeId, mustLookup(t, fs.FS, rootID, "vol0").NodeId)
			fs.Forget(v.NodeId, 1)
			requireAttr(t, fs.FS, v.NodeId, share.vols[0])
			fs.Forget(v.NodeId, 1)

			// Looked up anew: the same host directory keeps its node ID.
			again := mustLookup(t, fs.FS, rootID, "vol0")
			require.Equal(t, v.NodeId, again.NodeId)
			require.EqualValues(t, 1, count(t, fs.FS, v.NodeId))
			require.Equal(t, "vol0", readMarker(t, fs.FS, again.NodeId))
			fs.Forget(again.NodeId, 1)

			s := fs.RecoveryStats()
			require.Zero(t, s.Recoveries, "a fixed kernel never uses a forgotten node ID")
			require.EqualValues(t, 2, s.Forgotten)
			require.EqualValues(t, 1, s.Relooked)
			require.Empty(t, fs.logLines(t, "reinstated it"))
		})
	}
}

// TestRecoverNeverAnotherFile takes the held directory away in every way the
// host can; the node ID must answer ESTALE, never name what is there now.
func TestRecoverNeverAnotherFile(t *testing.T) {
	for _, id := range identities {
		for _, tc := range []struct {
			name   string
			change func(t *testing.T, s volumeShare, dir string)
			exists bool // something is at the path afterwards
		}{
			{"unmounted", func(t *testing.T, s volumeShare, dir string) {
				require.NoError(t, unix.Unmount(dir, unix.MNT_DETACH))
			}, true},
			{"unmounted and removed", func(t *testing.T, s volumeShare, dir string) {
				require.NoError(t, unix.Unmount(dir, unix.MNT_DETACH))
				require.NoError(t, os.Remove(dir))
			}, false},
			{"replaced by a new mount", func(t *testing.T, s volumeShare, dir string) {
				require.NoError(t, unix.Unmount(dir, unix.MNT_DETACH))
				s.mountVolume(t, filepath.Base(dir))
			}, true},
			{"replaced by a symlink to a volume", func(t *testing.T, s volumeShare, dir string) {
				require.NoError(t, unix.Unmount(dir, unix.MNT_DETACH))
				require.NoError(t, os.Remove(dir))
				require.NoError(t, os.Symlink(s.vols[1], dir))
			}, true},
		} {
			t.Run(id.name+"/"+tc.name, func(t *testing.T) {
				for _, when := range []string{"request", "lookup"} {
					t.Run("then "+when, func(t *testing.T) {
						share := newVolumeShare(t, 2)
						fs := newRecoverFS(t, share.src, RecoverOptions{noHandles: id.noHandles})
						n := mustLookup(t, fs.FS, rootID, "vol0").NodeId
						other := mustLookup(t, fs.FS, rootID, "vol1").NodeId
						fs.Forget(n, 1)
						tc.change(t, share, share.vols[0])

						if when == "lookup" {
							// The guest looks the name up before using n.
							e, st := lookup(t, fs.FS, rootID, "vol0")
							if tc.exists {
								require.Equal(t, fuse.OK, st)
								require.NotEqual(t, n, e.NodeId, "a new file gets a new node ID")
								require.Greater(t, e.NodeId, other)
							} else {
								require.Equal(t, fuse.ENOENT, st)
							}
						}
						for i := 0; i < 2; i++ {
							_, st := getattr(fs.FS, n)
							require.Equal(t, fuse.Status(syscall.ESTALE), st)
							_, st = lookup(t, fs.FS, n, "marker")
							require.Equal(t, fuse.Status(syscall.ESTALE), st)
						}
						s := fs.RecoveryStats()
						require.Zero(t, s.Recoveries)
						require.EqualValues(t, 1, s.Stale)
						require.Zero(t, s.HeldByFD, "nothing pinned for a stale root")
						require.Len(t, fs.logLines(t, "answers ESTALE"), 1, "logged once")
						requireAttr(t, fs.FS, other, share.vols[1])
					})
				}
			})
		}
	}
}

// TestRecoverOnlySubmountRoots: stale node IDs of anything else stay
// unknown, as with virtiofsd.
func TestRecoverOnlySubmountRoots(t *testing.T) {
	share := newVolumeShare(t, 1)
	require.NoError(t, os.Mkdir(filepath.Join(share.src, "dir"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(share.src, "file"), nil, 0o644))
	fs := newRecoverFS(t, share.src, RecoverOptions{})
	var ids []uint64
	for _, name := range []string{"dir", "file"} {
		e := mustLookup(t, fs.FS, rootID, name)
		fs.Forget(e.NodeId, 1)
		ids = append(ids, e.NodeId)
	}
	v := mustLookup(t, fs.FS, rootID, "vol0")
	m := mustLookup(t, fs.FS, v.NodeId, "marker")
	fs.Forget(m.NodeId, 1)
	ids = append(ids, m.NodeId, 9999)
	for _, n := range ids {
		_, st := getattr(fs.FS, n)
		require.Equal(t, fuse.EBADF, st, "node %d", n)
	}
	require.Zero(t, fs.RecoveryStats().Forgotten)

	// Without announced submounts there is nothing to recover.
	plain := newRecoverFS(t, share.src, RecoverOptions{})
	plain.SetKernelCapabilities(0)
	n := mustLookup(t, plain.FS, rootID, "vol0").NodeId
	plain.Forget(n, 1)
	_, st := getattr(plain.FS, n)
	require.Equal(t, fuse.EBADF, st)
	require.Zero(t, plain.RecoveryStats().Forgotten)
}

func TestRecoverBound(t *testing.T) {
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			share := newVolumeShare(t, 6)
			fds := openFDs(t)
			fs := newRecoverFS(t, share.src, RecoverOptions{MaxHeld: 3, noHandles: id.noHandles})
			n := make([]uint64, 6)
			for i := range n {
				n[i] = mustLookup(t, fs.FS, rootID, fmt.Sprintf("vol%d", i)).NodeId
			}
			for i := range n {
				fs.Forget(n[i], 1)
				require.LessOrEqual(t, fs.RecoveryStats().Held, 3)
			}
			s := fs.RecoveryStats()
			require.Equal(t, 3, s.Held)
			require.EqualValues(t, 3, s.Evicted)
			if id.noHandles {
				require.Equal(t, 3, s.HeldByFD)
				require.Equal(t, fds+2+3, openFDs(t), "the root, /proc/self/fd and three held descriptors")
			}
			for i := 0; i < 3; i++ {
				_, st := getattr(fs.FS, n[i])
				require.Equal(t, fuse.EBADF, st, "the longest held went first")
			}
			for i := 3; i < 6; i++ {
				requireAttr(t, fs.FS, n[i], share.vols[i])
			}
			require.EqualValues(t, 3, fs.RecoveryStats().Recoveries)

			// Recovered roots outlast forgotten ones: a new forgotten root
			// over the bound is dropped, not a recovered one.
			m0 := mustLookup(t, fs.FS, rootID, "vol0").NodeId
			require.Greater(t, m0, n[5], "an evicted root's directory gets a new node ID")
			fs.Forget(m0, 1)
			_, st := getattr(fs.FS, m0)
			require.Equal(t, fuse.EBADF, st)
			for i := 3; i < 6; i++ {
				requireAttr(t, fs.FS, n[i], share.vols[i])
			}

			// Only recovered roots left over the bound: the oldest goes.
			require.Equal(t, n[3], mustLookup(t, fs.FS, rootID, "vol3").NodeId) // the guest counts n3 again
			m1 := mustLookup(t, fs.FS, rootID, "vol1").NodeId
			fs.Forget(m1, 1)
			requireAttr(t, fs.FS, m1, share.vols[1]) // recovered: n4, n5, m1
			fs.Forget(n[3], 1)                       // n3 owned again: four recovered
			_, st = getattr(fs.FS, n[4])
			require.Equal(t, fuse.EBADF, st, "the oldest recovered root was dropped")
			for _, k := range []struct {
				id  uint64
				vol int
			}{{n[5], 5}, {m1, 1}, {n[3], 3}} {
				requireAttr(t, fs.FS, k.id, share.vols[k.vol])
			}
			s = fs.RecoveryStats()
			require.Equal(t, 3, s.Held)
			require.Len(t, fs.logLines(t, "table full"), 1)
			fs.Close()
			require.Equal(t, fds, openFDs(t), "every descriptor closed")
		})
	}
}

// TestRecoverSweep: a root held by descriptor must not keep a volume the host
// removed alive.
func TestRecoverSweep(t *testing.T) {
	share := newVolumeShare(t, 3)
	fds := openFDs(t)
	fs := newRecoverFS(t, share.src, RecoverOptions{noHandles: true})
	kept := mustLookup(t, fs.FS, rootID, "vol0").NodeId
	recovered := mustLookup(t, fs.FS, rootID, "vol1").NodeId
	intact := mustLookup(t, fs.FS, rootID, "vol2").NodeId
	for _, n := range []uint64{kept, recovered, intact} {
		fs.Forget(n, 1)
	}
	requireAttr(t, fs.FS, recovered, share.vols[1])
	require.Equal(t, 3, fs.RecoveryStats().HeldByFD)

	fs.rec.sweep()
	require.Equal(t, 3, fs.RecoveryStats().HeldByFD, "all still in the share")
	require.NoError(t, unix.Unmount(share.vols[0], unix.MNT_DETACH))
	require.NoError(t, unix.Unmount(share.vols[1], unix.MNT_DETACH))
	fs.rec.sweep()
	s := fs.RecoveryStats()
	require.Equal(t, 1, s.HeldByFD)
	require.EqualValues(t, 2, s.Stale)
	require.Equal(t, fds+2+1, openFDs(t), "the root, /proc/self/fd and the intact volume's descriptor")
	for _, n := range []uint64{kept, recovered} {
		_, st := getattr(fs.FS, n)
		require.Equal(t, fuse.Status(syscall.ESTALE), st)
	}
	requireAttr(t, fs.FS, intact, share.vols[2])
}

func TestRecoverReset(t *testing.T) {
	share := newVolumeShare(t, 2)
	fds := openFDs(t)
	fs := newRecoverFS(t, share.src, RecoverOptions{noHandles: true})
	a := mustLookup(t, fs.FS, rootID, "vol0").NodeId
	b := mustLookup(t, fs.FS, rootID, "vol1").NodeId
	fs.Forget(a, 1)
	fs.Forget(b, 1)
	requireAttr(t, fs.FS, b, share.vols[1])
	fs.Reset() // a rebooted guest
	for _, n := range []uint64{a, b} {
		_, st := getattr(fs.FS, n)
		require.Equal(t, fuse.EBADF, st)
	}
	s := fs.RecoveryStats()
	require.Zero(t, s.Held)
	require.EqualValues(t, 1, s.Recoveries, "counters last for the daemon's life")
	require.Equal(t, fds+2, openFDs(t), "only the root and /proc/self/fd are open")
	require.Greater(t, mustLookup(t, fs.FS, rootID, "vol0").NodeId, b)
}

// TestRecoverBusyParent: a parent superblock that looks the root up again
// and forgets it between every check of the host and the reinstatement does
// not starve the submount's request. A root held by file handle is checked
// by its handle, which such moves do not change; one held by descriptor gets
// a new inode with each move, so its checks go out of date until the last
// attempt checks under the lock.
func TestRecoverBusyParent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noHandles bool
		wantMoves int
	}{
		{"file handle", false, 1},
		{"descriptor", true, reinstateAttempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			share := newVolumeShare(t, 1)
			var fs *recoverFS
			moves := 0
			fs = newRecoverFS(t, share.src, RecoverOptions{noHandles: tc.noHandles, beforeReinstate: func() {
				moves++
				e := mustLookup(t, fs.FS, rootID, "vol0")
				fs.Forget(e.NodeId, 1)
			}})
			node := mustLookup(t, fs.FS, rootID, "vol0").NodeId
			fs.Forget(node, 1)

			requireAttr(t, fs.FS, node, share.vols[0])
			require.Equal(t, tc.wantMoves, moves)
			s := fs.RecoveryStats()
			require.Equal(t, uint64(1), s.Recoveries)
			require.Equal(t, uint64(tc.wantMoves), s.Relooked)
			require.Zero(t, s.Stale)
			require.Equal(t, "vol0", readMarker(t, fs.FS, node))
		})
	}
}

// TestRecoverRaces runs the guest's parent superblock (LOOKUP and FORGET of
// the volumes), their submounts (requests on the node IDs, lookups beneath
// them), READDIRPLUS and the sweeper at once; with a bound of one, the
// table evicts all the time. No node ID may ever name two files. Run with
// -race.
func TestRecoverRaces(t *testing.T) {
	for _, id := range identities {
		for _, maxHeld := range []int{0, 1} {
			t.Run(fmt.Sprintf("%s/max %d", id.name, maxHeld), func(t *testing.T) {
				raceRecovery(t, id.noHandles, maxHeld)
			})
		}
	}
}

func raceRecovery(t *testing.T, noHandles bool, maxHeld int) {
	const vols, rounds = 6, 200
	share := newVolumeShare(t, vols)
	fds := openFDs(t)
	fs := newRecoverFS(t, share.src, RecoverOptions{MaxHeld: maxHeld, noHandles: noHandles})
	bounded := maxHeld != 0
	nodes := make([]uint64, vols)
	inos := make([]uint64, vols)
	for i := range nodes {
		nodes[i] = mustLookup(t, fs.FS, rootID, fmt.Sprintf("vol%d", i)).NodeId
		inos[i] = inoOf(t, share.vols[i])
	}
	for _, n := range nodes {
		fs.Forget(n, 1)
	}
	// The submounts use the node ID the parent last got, as new
	// automounts would; over a bound evicted roots get new ones.
	current := make([]atomic.Uint64, vols)
	for i, n := range nodes {
		current[i].Store(n)
	}
	var mu sync.Mutex
	named := map[uint64]uint64{} // node ID -> host inode number seen
	var ebadf int
	saw := func(nodeid, ino uint64) error {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := named[nodeid]; ok && prev != ino {
			return fmt.Errorf("node %d named inode %d and %d", nodeid, prev, ino)
		}
		named[nodeid] = ino
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	// The parents (and READDIRPLUS) start once every submount has made its
	// first request, on a root forgotten above, so recoveries are certain,
	// not left to the scheduler; after that everything races.
	var firstRequests sync.WaitGroup
	firstRequests.Add(vols)
	for w := 0; w < 2*vols; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			i := w % vols
			name := fmt.Sprintf("vol%d", i)
			firstDone := func() {}
			if w < vols {
				firstRequests.Wait()
			} else {
				firstDone = sync.OnceFunc(firstRequests.Done)
				defer firstDone() // also when the worker fails early
			}
			for r := 0; r < rounds; r++ {
				if w < vols {
					// Parent superblock: look up, forget.
					var out fuse.EntryOut
					h := hdr(rootID)
					if st := fs.Lookup(nil, &h, name, &out); st != fuse.OK || out.Attr.Ino != inos[i] {
						fail(fmt.Errorf("lookup %s: %v ino %d, want %d", name, st, out.Attr.Ino, inos[i]))
						return
					}
					if !bounded && out.NodeId != nodes[i] {
						fail(fmt.Errorf("lookup %s: node %d, want %d", name, out.NodeId, nodes[i]))
						return
					}
					if err := saw(out.NodeId, out.Attr.Ino); err != nil {
						fail(err)
						return
					}
					current[i].Store(out.NodeId)
					fs.Forget(out.NodeId, 1)
					continue
				}
				// Submount: use the node ID with no lookup of its own.
				n := current[i].Load()
				a, st := getattr(fs.FS, n)
				firstDone()
				if st == fuse.EBADF && bounded {
					mu.Lock()
					ebadf++
					mu.Unlock()
					continue
				}
				if st != fuse.OK || a.Ino != inos[i] {
					fail(fmt.Errorf("getattr %d: %v ino %d, want %d", n, st, a.Ino, inos[i]))
					return
				}
				if err := saw(n, a.Ino); err != nil {
					fail(err)
					return
				}
				var out fuse.EntryOut
				h := hdr(n)
				if st := fs.Lookup(nil, &h, "marker", &out); st == fuse.OK {
					fs.Forget(out.NodeId, 1)
				} else if st != fuse.EBADF || !bounded {
					fail(fmt.Errorf("lookup marker in %d: %v", n, st))
					return
				}
			}
		}(w)
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for r := 0; r < rounds/10; r++ {
			fs.rec.sweep()
		}
	}()
	go func() {
		defer wg.Done()
		firstRequests.Wait() // READDIRPLUS looks the volumes up too
		for r := 0; r < rounds/10; r++ {
			var oo fuse.OpenOut
			if st := fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(rootID)}, &oo); st != fuse.OK {
				fail(fmt.Errorf("opendir: %v", st))
				return
			}
			buf := make([]byte, 4096)
			l := fuse.NewDirEntryList(buf, 0)
			if st := fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: hdr(rootID), Fh: oo.Fh, Size: 4096}, l); st != fuse.OK {
				fail(fmt.Errorf("readdirplus: %v", st))
			}
			for _, e := range decodePlus(l.Bytes()) {
				if e.NodeId != 0 {
					if err := saw(e.NodeId, e.Attr.Ino); err != nil {
						fail(err)
					}
					fs.Forget(e.NodeId, 1)
				}
			}
			fs.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(rootID), Fh: oo.Fh})
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := fs.RecoveryStats()
	t.Logf("%+v; EBADF %d", s, ebadf)
	require.Zero(t, s.Stale, "the host did not change")
	require.LessOrEqual(t, s.Held, fs.rec.max)
	if !bounded {
		// Each submount's first request found its root forgotten.
		require.GreaterOrEqual(t, s.Recoveries, uint64(vols))
		require.Zero(t, s.Evicted)
		require.Zero(t, ebadf)
		for i, n := range nodes {
			requireAttr(t, fs.FS, n, share.vols[i])
		}
	}
	fs.Close()
	require.Equal(t, fds, openFDs(t), "every descriptor closed")
}
