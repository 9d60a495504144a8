package guestkernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf/btf"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

const (
	btfMagic     = 0xeb9f
	btfHeaderLen = 24
	// maxBTF bounds a BTF blob; a distro vmlinux carries 4–6 MiB.
	maxBTF = 128 << 20
)

// btfFacts is what a kernel's BTF says about FUSE.
type btfFacts struct {
	Present    bool
	FUSE       bool // struct fuse_inode is defined: FUSE is built in
	Fix        bool // struct fuse_submount_lookup is defined
	Submounts  bool // struct fuse_conn has auto_submounts
	StringOnly bool // decided from the string table alone
}

// btfHeader is the fixed part of a BTF blob (Documentation/bpf/btf.rst).
type btfHeader struct {
	order                            binary.ByteOrder
	hdrLen                           uint32
	typeOff, typeLen, strOff, strLen uint32
}

// parseBTFHeader checks b starts with a BTF header whose sections fit in
// limit bytes and returns it with the blob's total length.
func parseBTFHeader(b []byte, limit int64) (btfHeader, int64, error) {
	var h btfHeader
	if len(b) < btfHeaderLen {
		return h, 0, errors.New("btf: short header")
	}
	switch {
	case binary.LittleEndian.Uint16(b) == btfMagic:
		h.order = binary.LittleEndian
	case binary.BigEndian.Uint16(b) == btfMagic:
		h.order = binary.BigEndian
	default:
		return h, 0, errors.New("btf: bad magic")
	}
	if b[2] != 1 {
		return h, 0, fmt.Errorf("btf: unsupported version %d", b[2])
	}
	h.hdrLen = h.order.Uint32(b[4:])
	h.typeOff = h.order.Uint32(b[8:])
	h.typeLen = h.order.Uint32(b[12:])
	h.strOff = h.order.Uint32(b[16:])
	h.strLen = h.order.Uint32(b[20:])
	if h.hdrLen < btfHeaderLen || h.hdrLen > 256 {
		return h, 0, fmt.Errorf("btf: header length %d", h.hdrLen)
	}
	typesEnd := int64(h.typeOff) + int64(h.typeLen)
	strEnd := int64(h.strOff) + int64(h.strLen)
	if h.strLen == 0 || h.typeLen%4 != 0 || h.typeOff%4 != 0 {
		return h, 0, errors.New("btf: malformed section offsets")
	}
	// Types and strings must not overlap.
	if !(typesEnd <= int64(h.strOff) || strEnd <= int64(h.typeOff)) {
		return h, 0, errors.New("btf: type and string sections overlap")
	}
	total := int64(h.hdrLen) + max(typesEnd, strEnd)
	if total > limit || total > maxBTF {
		return h, 0, fmt.Errorf("btf: %d bytes exceed the %d available", total, min(limit, maxBTF))
	}
	return h, total, nil
}

// strings returns the string section of blob, which must hold the whole BTF.
func (h btfHeader) strings(blob []byte) []byte {
	start := int64(h.hdrLen) + int64(h.strOff)
	return blob[start : start+int64(h.strLen)]
}

// hasName reports whether name is in a BTF string table. The table starts
// with "" so every name follows a NUL. The needle starts with the name, not
// the NUL: NUL is the table's most common byte, which would slow the search.
func hasName(strs []byte, name string) bool {
	needle := append([]byte(name), 0)
	for off := 0; ; {
		i := bytes.Index(strs[off:], needle)
		if i < 0 {
			return false
		}
		if at := off + i; at > 0 && strs[at-1] == 0 {
			return true
		}
		off += i + 1
	}
}

// analyzeBTF decides what a BTF blob says about FUSE. The string table answers
// "no FUSE" alone; when FUSE names are present a full parse (cilium/ebpf)
// confirms they name struct definitions, not forward declarations or
// functions.
func analyzeBTF(blob []byte) (btfFacts, error) {
	h, total, err := parseBTFHeader(blob, int64(len(blob)))
	if err != nil {
		return btfFacts{}, err
	}
	blob = blob[:total]
	strs := h.strings(blob)
	if len(strs) == 0 || strs[0] != 0 || strs[len(strs)-1] != 0 {
		return btfFacts{}, errors.New("btf: malformed string table")
	}
	f := btfFacts{Present: true}
	if !hasName(strs, "fuse_inode") && !hasName(strs, "fuse_submount_lookup") {
		f.StringOnly = true
		return f, nil
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		return btfFacts{}, fmt.Errorf("btf: %w", err)
	}
	f.Fix = hasStruct(spec, "fuse_submount_lookup")
	f.FUSE = f.Fix || hasStruct(spec, "fuse_inode")
	var conn *btf.Struct
	if spec.TypeByName("fuse_conn", &conn) == nil {
		for _, m := range conn.Members {
			if m.Name == "auto_submounts" {
				f.Submounts = true
			}
		}
	}
	return f, nil
}

func hasStruct(spec *btf.Spec, name string) bool {
	var s *btf.Struct
	return spec.TypeByName(name, &s) == nil
}

// btfSignature starts a kernel BTF blob: magic, version 1, flags 0 and a
// 24-byte header, in either byte order.
var btfSignatures = [][]byte{
	{0x9f, 0xeb, 1, 0, 24, 0, 0, 0},
	{0xeb, 0x9f, 1, 0, 0, 0, 0, 24},
}

// scanBTF finds a BTF blob in a raw image (no section headers: arm64 Image)
// by its header signature and returns it, or nil. A candidate must have a
// consistent header and a string table that starts and ends with NUL.
func scanBTF(ctx context.Context, r io.ReaderAt, off, n int64) ([]byte, error) {
	buf := make([]byte, min(n, scanChunk+btfHeaderLen))
	for pos := int64(0); pos < n; pos += scanChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		want := min(int64(len(buf)), n-pos)
		got, err := r.ReadAt(buf[:want], off+pos)
		if err != nil && err != io.EOF {
			return nil, err
		}
		chunk := buf[:got]
		for _, sig := range btfSignatures {
			for i := 0; ; {
				j := bytes.Index(chunk[i:], sig)
				if j < 0 {
					break
				}
				at := pos + int64(i+j)
				if blob := btfAt(r, off+at, n-at, chunk[i+j:]); blob != nil {
					return blob, nil
				}
				i += j + 1
			}
		}
		if int64(got) < want {
			break
		}
	}
	return nil, nil
}

// btfAt reads the blob whose header starts head (at off, with avail bytes
// left in the image) if it checks out.
func btfAt(r io.ReaderAt, off, avail int64, head []byte) []byte {
	h, total, err := parseBTFHeader(head, avail)
	if err != nil {
		return nil
	}
	blob := make([]byte, total)
	if n, _ := r.ReadAt(blob, off); int64(n) != total {
		return nil
	}
	strs := h.strings(blob)
	if strs[0] != 0 || strs[len(strs)-1] != 0 {
		return nil
	}
	return blob
}

func (f btfFacts) apply(r *verdict.Report) {
	r.BTFPresent = f.Present
	r.BTFHasFUSE = f.FUSE
	r.BTFHasFix = f.Fix
	r.BTFHasSubmounts = f.Submounts
}
