package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Split virtqueue layout (VIRTIO 1.2, 2.7).
const (
	descSize        = 16
	descFlagNext    = 1
	descFlagWrite   = 2
	descFlagIndir   = 4
	availFlagNoIntr = 1
)

var (
	errChainTooLong  = errors.New("descriptor chain longer than its table (loop?)")
	errNestedIndir   = errors.New("indirect descriptor inside an indirect table")
	errIndirNext     = errors.New("indirect descriptor with NEXT set")
	errIndirDisabled = errors.New("indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated")
	errReadAfterW    = errors.New("device-readable descriptor after a device-writable one")
)

// Limits bound what one descriptor chain may describe.
type Limits struct {
	// MaxReadable and MaxWritable cap the bytes of the device-readable and
	// device-writable parts of one chain.
	MaxReadable uint64
	MaxWritable uint64
}

// Chain is one request: the descriptor chain at Head, as slices of guest
// memory. Readable is what the driver wrote for the device; the device
// writes its reply into Writable.
type Chain struct {
	Head     uint16
	Readable [][]byte
	Writable [][]byte

	table *memTable
	rings rings
	run   *queueRun
}

// walkChain reads the chain starting at head from desc, a table of num
// descriptors. Every descriptor is read once (the guest may rewrite them
// concurrently) and every buffer must lie in guest memory.
func walkChain(t *memTable, desc []byte, num uint16, head uint16, indirectOK bool, lim Limits, c *Chain) error {
	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	table := desc
	tableLen := uint32(num)
	ttl := uint32(num)
	idx := uint32(head)
	indirect := false
	var readable, writable uint64
	for {
		if idx >= tableLen {
			return fmt.Errorf("descriptor %d outside table of %d", idx, tableLen)
		}
		if ttl == 0 {
			return errChainTooLong
		}
		ttl--
		d := table[idx*descSize : idx*descSize+descSize : idx*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&descFlagIndir != 0 {
			switch {
			case !indirectOK:
				return errIndirDisabled
			case indirect:
				return errNestedIndir
			case flags&descFlagNext != 0:
				return errIndirNext
			case length == 0 || length%descSize != 0 || length/descSize > maxQueueSize:
				return fmt.Errorf("indirect table of %d bytes", length)
			}
			tbl, ok := t.guestSlice(addr, uint64(length))
			if !ok {
				return fmt.Errorf("indirect table at guest 0x%x+%d outside guest memory", addr, length)
			}
			table, tableLen, ttl, idx, indirect = tbl, length/descSize, length/descSize, 0, true
			continue
		}

		if length > 0 {
			var ok bool
			if flags&descFlagWrite != 0 {
				writable += uint64(length)
				if writable > lim.MaxWritable {
					return fmt.Errorf("device-writable part exceeds %d bytes", lim.MaxWritable)
				}
				c.Writable, ok = t.appendGuest(c.Writable, addr, uint64(length))
			} else {
				if len(c.Writable) > 0 {
					return errReadAfterW
				}
				readable += uint64(length)
				if readable > lim.MaxReadable {
					return fmt.Errorf("device-readable part exceeds %d bytes", lim.MaxReadable)
				}
				c.Readable, ok = t.appendGuest(c.Readable, addr, uint64(length))
			}
			if !ok {
				return fmt.Errorf("buffer at guest 0x%x+%d outside guest memory", addr, length)
			}
		}
		if flags&descFlagNext == 0 {
			return nil
		}
		idx = uint32(next)
	}
}

// rings is a queue's three rings translated through one memTable.
//
// Ordering with the driver (VIRTIO 1.2, 2.7.13 and 2.7.7.2), built from Go's
// atomics, which are sequentially consistent on every architecture (amd64:
// XCHG for stores; arm64: STLR/LDAR, ordered against each other; ppc64le:
// SYNC before each store and load):
//   - avail->idx is read with an atomic load before the ring entries and
//     descriptors it publishes (load-load);
//   - used elements are written before used->idx is published with an
//     atomic store (store-store);
//   - used_event and avail->flags are read after another atomic load that
//     follows that store (store-load: a plain load alone may be satisfied
//     before the store is visible on arm64 and ppc64le, and a new
//     used_event of the guest would be missed, losing an interrupt);
//   - avail_event is written before an atomic read-modify-write and the
//     atomic re-load of avail->idx (store-load, for the kick we ask for).
//
// Big-endian hosts are refused (CheckHost).
type rings struct {
	desc, avail, used []byte
	num               uint16
	eventIdx          bool
}

// ringAddrs are a queue's ring addresses in the frontend's address space.
type ringAddrs struct {
	desc, avail, used uint64
}

func translateRings(t *memTable, a ringAddrs, num uint16, eventIdx bool) (rings, error) {
	if a.desc%16 != 0 || a.avail%2 != 0 || a.used%4 != 0 {
		return rings{}, fmt.Errorf("misaligned rings (desc 0x%x, avail 0x%x, used 0x%x)", a.desc, a.avail, a.used)
	}
	n := uint64(num)
	extra := uint64(0)
	if eventIdx {
		extra = 2
	}
	r := rings{num: num, eventIdx: eventIdx}
	var ok bool
	if r.desc, ok = t.userSlice(a.desc, descSize*n); !ok {
		return rings{}, fmt.Errorf("descriptor table at 0x%x (%d entries) outside guest memory", a.desc, n)
	}
	if r.avail, ok = t.userSlice(a.avail, 4+2*n+extra); !ok {
		return rings{}, fmt.Errorf("available ring at 0x%x outside guest memory", a.avail)
	}
	if r.used, ok = t.userSlice(a.used, 4+8*n+extra); !ok {
		return rings{}, fmt.Errorf("used ring at 0x%x outside guest memory", a.used)
	}
	// The indexes are accessed atomically through our mapping, which is
	// where alignment matters: a region's frontend address need not share
	// its mapping's alignment, and a misaligned atomic faults on arm64.
	if hostAddr(r.avail)%2 != 0 || hostAddr(r.used)%4 != 0 {
		return rings{}, fmt.Errorf("rings misaligned in the backend's mapping (avail 0x%x, used 0x%x): the memory region's user address and mmap offset disagree in alignment", a.avail, a.used)
	}
	return r, nil
}

func hostAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// availIdx loads the driver's avail->idx with acquire semantics through the
// aligned 32-bit word that holds it.
func (r *rings) availIdx() uint16 {
	p := unsafe.Pointer(&r.avail[0])
	if uintptr(p)%4 == 0 {
		return uint16(atomic.LoadUint32((*uint32)(p)) >> 16)
	}
	// avail is 2 mod 4: idx starts an aligned word (idx, ring[0]).
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.avail[2]))))
}

func (r *rings) availEntry(i uint16) uint16 {
	return binary.LittleEndian.Uint16(r.avail[4+2*uint32(i%r.num):])
}

func (r *rings) putUsed(slot uint16, id uint16, n uint32) {
	e := r.used[4+8*uint32(slot%r.num):]
	binary.LittleEndian.PutUint32(e[0:], uint32(id))
	binary.LittleEndian.PutUint32(e[4:], n)
}

// publishUsed stores used->idx (and our used->flags, 0) with release
// semantics; on amd64 the store is also a full fence.
func (r *rings) publishUsed(idx uint16) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.used[0])), uint32(idx)<<16)
}

// needNotify reports whether the driver wants an interrupt now that used
// moved from old to newIdx (published by publishUsed just before). The
// atomic load of avail->idx orders the reads of used_event or avail->flags
// after the store of used->idx; those two fields cannot be loaded
// atomically themselves, as no aligned 32-bit word around them is sure to
// lie inside the ring.
func (r *rings) needNotify(old, newIdx uint16) bool {
	_ = r.availIdx()
	if r.eventIdx {
		usedEvent := binary.LittleEndian.Uint16(r.avail[4+2*uint32(r.num):])
		return vringNeedEvent(usedEvent, newIdx, old)
	}
	return binary.LittleEndian.Uint16(r.avail[0:])&availFlagNoIntr == 0
}

// setAvailEvent asks the driver to kick once it makes entry idx available.
func (r *rings) setAvailEvent(idx uint16) {
	binary.LittleEndian.PutUint16(r.used[4+8*uint32(r.num):], idx)
}

// vringNeedEvent is vring_need_event from the virtio spec: was event passed
// when used moved from old to new?
func vringNeedEvent(event, newIdx, old uint16) bool {
	return newIdx-event-1 < newIdx-old
}
