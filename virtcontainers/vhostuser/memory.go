package vhostuser

import (
	"fmt"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// region is one mapped slice of guest memory.
type region struct {
	regionDesc
	mem []byte // len == Size
	// m is the mapping behind mem (nil for memory the tests provide); tables
	// that share a region share its mapping.
	m *mapping
}

// mapping is one mmap of a frontend fd, unmapped when the last table that
// uses it is released.
type mapping struct {
	whole []byte
	refs  atomic.Int64
}

func (m *mapping) unref() {
	if m != nil && m.refs.Add(-1) == 0 {
		_ = unix.Munmap(m.whole)
	}
}

// memTable is an immutable snapshot of guest memory. Requests in flight hold
// a reference, so a table replaced by SET_MEM_TABLE or ADD/REM_MEM_REG is
// unmapped only once the last request that read through it has completed.
type memTable struct {
	regions []region
	refs    atomic.Int64
}

// newMemTable takes a reference on each region's mapping.
func newMemTable(regions []region) *memTable {
	t := &memTable{regions: regions}
	for _, r := range regions {
		if r.m != nil {
			r.m.refs.Add(1)
		}
	}
	t.refs.Store(1)
	return t
}

// tryRef takes a reference unless the table is already released.
func (t *memTable) tryRef() bool {
	for {
		n := t.refs.Load()
		if n <= 0 {
			return false
		}
		if t.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (t *memTable) unref() {
	if t.refs.Add(-1) == 0 {
		for _, r := range t.regions {
			r.m.unref()
		}
	}
}

// guestSlice returns the guest-physical range [gpa, gpa+n) if it lies in
// one region.
func (t *memTable) guestSlice(gpa, n uint64) ([]byte, bool) {
	for i := range t.regions {
		r := &t.regions[i]
		if gpa >= r.GuestPhysAddr && gpa-r.GuestPhysAddr < r.Size {
			off := gpa - r.GuestPhysAddr
			if n > r.Size-off {
				return nil, false
			}
			return r.mem[off : off+n : off+n], true
		}
	}
	return nil, false
}

// appendGuest appends the guest-physical range [gpa, gpa+n) to iov, split at
// region boundaries; it fails if any byte of it is not guest memory.
func (t *memTable) appendGuest(iov [][]byte, gpa, n uint64) ([][]byte, bool) {
	if gpa+n < gpa {
		return iov, false
	}
	for n > 0 {
		found := false
		for i := range t.regions {
			r := &t.regions[i]
			if gpa >= r.GuestPhysAddr && gpa-r.GuestPhysAddr < r.Size {
				off := gpa - r.GuestPhysAddr
				k := min(n, r.Size-off)
				iov = append(iov, r.mem[off:off+k:off+k])
				gpa += k
				n -= k
				found = true
				break
			}
		}
		if !found {
			return iov, false
		}
	}
	return iov, true
}

// userSlice translates a range in the frontend's address space, as ring
// addresses are given.
func (t *memTable) userSlice(ua, n uint64) ([]byte, bool) {
	for i := range t.regions {
		r := &t.regions[i]
		if ua >= r.UserAddr && ua-r.UserAddr < r.Size {
			off := ua - r.UserAddr
			if n > r.Size-off {
				return nil, false
			}
			return r.mem[off : off+n : off+n], true
		}
	}
	return nil, false
}

// releaseUnused unmaps regions mapped for a table that was never built.
func releaseUnused(rs []region) {
	for _, r := range rs {
		if r.m != nil && r.m.refs.Load() == 0 {
			_ = unix.Munmap(r.m.whole)
		}
	}
}

// mapRegion maps the memory behind fd that region d describes. The fd is not
// kept: the mapping holds the memory.
func mapRegion(d regionDesc, fd int) (region, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return region{}, fmt.Errorf("memory region at guest 0x%x: fstat fd: %w", d.GuestPhysAddr, err)
	}
	// Touching a page past the end of the file would SIGBUS the daemon.
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < d.MmapOffset+d.Size {
		return region{}, fmt.Errorf("memory region at guest 0x%x: needs %d bytes of its fd, file has %d: %w",
			d.GuestPhysAddr, d.MmapOffset+d.Size, st.Size, errdefs.ErrInvalidArgument)
	}
	page := uint64(unix.Getpagesize())
	start := d.MmapOffset &^ (page - 1)
	length := d.MmapOffset - start + d.Size
	if length > uint64(^uint(0)>>1) {
		return region{}, fmt.Errorf("memory region at guest 0x%x: too large: %w", d.GuestPhysAddr, errdefs.ErrInvalidArgument)
	}
	m, err := unix.Mmap(fd, int64(start), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return region{}, fmt.Errorf("memory region at guest 0x%x size 0x%x: mmap: %w", d.GuestPhysAddr, d.Size, err)
	}
	skip := d.MmapOffset - start
	// The caller's table takes the first reference.
	return region{regionDesc: d, mem: m[skip : skip+d.Size : skip+d.Size], m: &mapping{whole: m}}, nil
}

func overlaps(a, b regionDesc) bool {
	return a.GuestPhysAddr < b.GuestPhysAddr+b.Size && b.GuestPhysAddr < a.GuestPhysAddr+a.Size
}

// checkDisjoint rejects tables whose guest ranges overlap: translation must
// be unambiguous.
func checkDisjoint(ds []regionDesc) error {
	for i := range ds {
		for j := i + 1; j < len(ds); j++ {
			if overlaps(ds[i], ds[j]) {
				return fmt.Errorf("memory regions at guest 0x%x and 0x%x overlap: %w", ds[i].GuestPhysAddr, ds[j].GuestPhysAddr, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}
