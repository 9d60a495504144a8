package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// The shared directory's tree, made once on the host and served by every
// daemon in turn.
const (
	warmFiles  = 1000     // warm/: looked up and kept, then LOOKUP+GETATTR
	churnFiles = 1000     // churn/: LOOKUP+FORGET
	bigFiles   = 10000    // big/: READDIRPLUS
	dataSize   = 64 << 20 // data: READ
	writeSize  = 16 << 20 // w<N>: WRITE, one file per stream
	mib        = 1 << 20
)

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

// makeTree fills the shared directory dir.
func makeTree(dir string, streams, scale int) error {
	for _, d := range []struct {
		name string
		n    int
	}{{"warm", warmFiles}, {"churn", churnFiles}, {"big", bigFiles}, {"scale", scale}, {"create", 0}} {
		sub := filepath.Join(dir, d.name)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		for _, n := range names("f", d.n) {
			f, err := os.Create(filepath.Join(sub, n))
			if err != nil {
				return err
			}
			f.Close()
		}
	}
	data := make([]byte, dataSize)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), data, 0o644); err != nil {
		return err
	}
	for w := range streams {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("w%d", w)), data[:writeSize], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// prepared is a workload ready to run: op does one operation of stream w (its i-th)
// and returns the units it moved (operations or bytes).
type prepared struct {
	op   func(w, i int) (int, error)
	done func() error
}

// workload is one row of the table.
type workload struct {
	key, label string
	data       bool // units are bytes: MiB/s
	prepare    func(cs []*client) (*prepared, error)
}

var workloads = []workload{
	{"lookup_getattr", "LOOKUP+GETATTR, warm tree of 1000 files (pairs)", false, prepLookupGetattr},
	{"lookup_forget", "LOOKUP+FORGET churn, 1000 files (pairs)", false, prepLookupForget},
	{"create_unlink", "CREATE+RELEASE+UNLINK+FORGET (files)", false, prepCreateUnlink},
	{"readdirplus", "READDIRPLUS of 10k entries, 4 KiB buffers (entries)", false, prepReaddirplus},
	{"rand_read_4k", "4 KiB random READ, 64 MiB file (reads)", false, prepRandRead},
	{"seq_read_1m", "1 MiB sequential READ", true, prepSeqRead},
	{"seq_write_1m", "1 MiB sequential WRITE", true, prepSeqWrite},
}

func prepLookupGetattr(cs []*client) (*prepared, error) {
	c, streams := cs[0], len(cs)
	dir, err := c.lookup(rootID, "warm")
	if err != nil {
		return nil, err
	}
	ns := names("f", warmFiles)
	for _, n := range ns {
		if _, err := c.lookup(dir.NodeId, n); err != nil {
			return nil, err
		}
	}
	return &prepared{op: func(w, i int) (int, error) {
		e, err := cs[w].lookup(dir.NodeId, ns[(i*streams+w)%len(ns)])
		if err != nil {
			return 0, err
		}
		return 1, cs[w].getattr(e.NodeId)
	}, done: func() error { return nil }}, nil
}

func prepLookupForget(cs []*client) (*prepared, error) {
	c, streams := cs[0], len(cs)
	dir, err := c.lookup(rootID, "churn")
	if err != nil {
		return nil, err
	}
	ns := names("f", churnFiles)
	return &prepared{op: func(w, i int) (int, error) {
		e, err := cs[w].lookup(dir.NodeId, ns[(i*streams+w)%len(ns)])
		if err != nil {
			return 0, err
		}
		return 1, cs[w].forget(e.NodeId, 1)
	}, done: func() error { return nil }}, nil
}

func prepCreateUnlink(cs []*client) (*prepared, error) {
	c := cs[0]
	dir, err := c.lookup(rootID, "create")
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	seq := 0
	return &prepared{op: func(w, i int) (int, error) {
		mu.Lock()
		seq++
		name := fmt.Sprintf("n%d", seq)
		mu.Unlock()
		e, fh, err := cs[w].create(dir.NodeId, name)
		if err != nil {
			return 0, err
		}
		if err := cs[w].release(e.NodeId, fh, opRelease); err != nil {
			return 0, err
		}
		if err := cs[w].unlink(dir.NodeId, name); err != nil {
			return 0, err
		}
		return 1, cs[w].forget(e.NodeId, 1)
	}, done: func() error { return nil }}, nil
}

func prepReaddirplus(cs []*client) (*prepared, error) {
	c := cs[0]
	dir, err := c.lookup(rootID, "big")
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	held := map[uint64]uint64{}
	return &prepared{op: func(w, i int) (int, error) {
		fh, err := cs[w].open(dir.NodeId, syscall.O_RDONLY|syscall.O_DIRECTORY, opOpendir)
		if err != nil {
			return 0, err
		}
		n := 0
		mine := map[uint64]uint64{}
		for off := uint64(0); ; {
			ids, next, end, err := cs[w].readdirplus(dir.NodeId, fh, off, 4096)
			if err != nil {
				return 0, err
			}
			if end {
				break
			}
			for _, id := range ids {
				mine[id]++
			}
			n += len(ids)
			off = next
		}
		mu.Lock()
		for id, k := range mine {
			held[id] += k
		}
		mu.Unlock()
		if n < bigFiles {
			return 0, fmt.Errorf("READDIRPLUS: %d entries, want %d", n, bigFiles)
		}
		return n, cs[w].release(dir.NodeId, fh, opReleasedir)
	}, done: func() error {
		// The guest drops its dentries: every lookup given back.
		for id, k := range held {
			if err := c.forget(id, k); err != nil {
				return err
			}
		}
		return nil
	}}, nil
}

// openStreams looks up name(w) and opens it for each stream.
func openStreams(c *client, streams int, name func(w int) string, flags uint32) (nodes, fhs []uint64, done func() error, err error) {
	for w := range streams {
		e, err := c.lookup(rootID, name(w))
		if err != nil {
			return nil, nil, nil, err
		}
		fh, err := c.open(e.NodeId, flags, opOpen)
		if err != nil {
			return nil, nil, nil, err
		}
		nodes, fhs = append(nodes, e.NodeId), append(fhs, fh)
	}
	return nodes, fhs, func() error {
		for w := range nodes {
			if err := c.release(nodes[w], fhs[w], opRelease); err != nil {
				return err
			}
			if err := c.forget(nodes[w], 1); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func prepRandRead(cs []*client) (*prepared, error) {
	c, streams := cs[0], len(cs)
	nodes, fhs, done, err := openStreams(c, streams, func(int) string { return "data" }, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	rngs := make([]*rand.Rand, streams)
	for w := range rngs {
		rngs[w] = rand.New(rand.NewPCG(uint64(w), 16))
	}
	return &prepared{op: func(w, i int) (int, error) {
		off := uint64(rngs[w].IntN(dataSize/4096)) * 4096
		n, err := cs[w].read(nodes[w], fhs[w], off, 4096)
		if err == nil && n != 4096 {
			err = fmt.Errorf("READ: %d bytes", n)
		}
		return 1, err
	}, done: done}, nil
}

func prepSeqRead(cs []*client) (*prepared, error) {
	c, streams := cs[0], len(cs)
	nodes, fhs, done, err := openStreams(c, streams, func(int) string { return "data" }, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return &prepared{op: func(w, i int) (int, error) {
		off := uint64((w*dataSize/streams + i*mib) % dataSize)
		n, err := cs[w].read(nodes[w], fhs[w], off, mib)
		if err == nil && n != mib {
			err = fmt.Errorf("READ: %d bytes", n)
		}
		return n, err
	}, done: done}, nil
}

func prepSeqWrite(cs []*client) (*prepared, error) {
	c, streams := cs[0], len(cs)
	nodes, fhs, done, err := openStreams(c, streams, func(w int) string { return fmt.Sprintf("w%d", w) }, syscall.O_WRONLY)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, mib)
	for i := range buf {
		buf[i] = byte(i ^ i>>8)
	}
	chunk := min(int(c.maxWrite), mib)
	return &prepared{op: func(w, i int) (int, error) {
		off := (i * mib) % writeSize
		// A guest splits at the daemon's max_write.
		for k := 0; k < mib; k += chunk {
			if err := cs[w].write(nodes[w], fhs[w], uint64(off+k), buf[k:k+chunk]); err != nil {
				return 0, err
			}
		}
		return mib, nil
	}, done: done}, nil
}
