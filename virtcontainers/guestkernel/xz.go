package guestkernel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel compresses with `xz --check=crc32 --x86 --lzma2=...`
// (scripts/xz_wrap.sh): an .xz stream whose blocks chain a BCJ filter before
// LZMA2. github.com/ulikunitz/xz reads LZMA2 but refuses BCJ filters, so this
// file reads the .xz container itself (tukaani.org/xz/xz-file-format.txt),
// hands the LZMA2 data to ulikunitz/xz/lzma and undoes the BCJ filter.

const (
	xzFilterDelta = 0x03
	xzFilterX86   = 0x04
	xzFilterARM64 = 0x0a
	xzFilterLZMA2 = 0x21
)

// xzFilterNames names filters this build cannot undo, for error messages.
func xzFilterName(id uint64) string {
	switch id {
	case xzFilterDelta:
		return "delta"
	case 0x05:
		return "powerpc BCJ"
	case 0x06:
		return "ia64 BCJ"
	case 0x07:
		return "arm BCJ"
	case 0x08:
		return "armthumb BCJ"
	case 0x09:
		return "sparc BCJ"
	case 0x0b:
		return "riscv BCJ"
	}
	return fmt.Sprintf("filter 0x%x", id)
}

var errXZ = errors.New("xz: malformed stream")

// countingReader counts what LZMA2 consumes, to find the block padding. It
// is an io.ByteReader so the lzma package reads through it without
// buffering ahead.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type xzFilter struct {
	id    uint64
	props []byte
}

// decompressXZ expands an .xz stream (its first stream; what follows, such
// as kbuild's appended size, is ignored) into at most limit bytes.
func decompressXZ(ctx context.Context, data []byte, limit, hint int64) ([]byte, error) {
	if len(data) < 12 || !bytes.HasPrefix(data, []byte("\xfd7zXZ\x00")) {
		return nil, fmt.Errorf("xz: bad stream header: %w", errXZ)
	}
	flags := data[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(data[8:12]) {
		return nil, fmt.Errorf("xz: stream header checksum mismatch: %w", errXZ)
	}
	if flags[0] != 0 || flags[1]&0xf0 != 0 {
		return nil, fmt.Errorf("xz: unsupported stream flags: %w", errXZ)
	}
	check := flags[1] & 0x0f
	checkLen := map[byte]int{0: 0, 1: 4, 4: 8, 10: 32}
	clen, ok := checkLen[check]
	if !ok {
		return nil, fmt.Errorf("xz: unsupported check type %d: %w", check, ErrUnsupportedCompression)
	}
	cr := &countingReader{r: bufio.NewReader(bytes.NewReader(data[12:]))}
	var out []byte
	if hint > 0 && hint <= limit {
		out = make([]byte, 0, hint)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		blockStart := cr.n
		first, err := cr.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("xz: truncated before index: %w", errXZ)
		}
		if first == 0 {
			// Index: every block is done.
			return out, nil
		}
		filters, err := readXZBlockHeader(cr, first)
		if err != nil {
			return nil, err
		}
		last := filters[len(filters)-1]
		if last.id != xzFilterLZMA2 || len(last.props) != 1 || last.props[0] > 40 {
			return nil, fmt.Errorf("xz: last filter is not LZMA2: %w", errXZ)
		}
		// Matches reach no further back than the output, which stops at
		// limit: a larger dictionary is never needed.
		dictCap := min(lzma2DictSize(last.props[0]), max(limit, lzma.MinDictCap), 1<<30)
		lr, err := lzma.Reader2Config{DictCap: int(max(dictCap, lzma.MinDictCap))}.NewReader2(cr)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		blockOut := len(out)
		out, err = appendLimited(ctx, out, lr, limit)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		// Undo the non-last filters, last applied first.
		for i := len(filters) - 2; i >= 0; i-- {
			if err := undoBCJ(filters[i], out[blockOut:]); err != nil {
				return nil, err
			}
		}
		// Block padding to a multiple of four, then the check.
		for (cr.n-blockStart)%4 != 0 {
			if b, err := cr.ReadByte(); err != nil || b != 0 {
				return nil, fmt.Errorf("xz: bad block padding: %w", errXZ)
			}
		}
		sum := make([]byte, clen)
		if _, err := io.ReadFull(cr, sum); err != nil {
			return nil, fmt.Errorf("xz: truncated block check: %w", errXZ)
		}
		if !xzCheckOK(check, out[blockOut:], sum) {
			return nil, fmt.Errorf("xz: block check mismatch: %w", errXZ)
		}
	}
}

// readXZBlockHeader reads a block header whose first (size) byte was read.
func readXZBlockHeader(cr *countingReader, first byte) ([]xzFilter, error) {
	hdr := make([]byte, (int(first)+1)*4)
	hdr[0] = first
	if _, err := io.ReadFull(cr, hdr[1:]); err != nil {
		return nil, fmt.Errorf("xz: truncated block header: %w", errXZ)
	}
	body, sum := hdr[:len(hdr)-4], hdr[len(hdr)-4:]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(sum) {
		return nil, fmt.Errorf("xz: block header checksum mismatch: %w", errXZ)
	}
	flags := body[1]
	if flags&0x3c != 0 {
		return nil, fmt.Errorf("xz: reserved block flags: %w", errXZ)
	}
	r := bytes.NewReader(body[2:])
	if flags&0x40 != 0 { // compressed size
		if _, err := binary.ReadUvarint(r); err != nil {
			return nil, fmt.Errorf("xz: block header: %w", errXZ)
		}
	}
	if flags&0x80 != 0 { // uncompressed size
		if _, err := binary.ReadUvarint(r); err != nil {
			return nil, fmt.Errorf("xz: block header: %w", errXZ)
		}
	}
	n := int(flags&0x03) + 1
	filters := make([]xzFilter, 0, n)
	for range n {
		id, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, fmt.Errorf("xz: block header: %w", errXZ)
		}
		size, err := binary.ReadUvarint(r)
		if err != nil || size > uint64(r.Len()) {
			return nil, fmt.Errorf("xz: block header: %w", errXZ)
		}
		props := make([]byte, size)
		_, _ = io.ReadFull(r, props)
		filters = append(filters, xzFilter{id: id, props: props})
	}
	for _, pad := range body[len(body)-r.Len():] {
		if pad != 0 {
			return nil, fmt.Errorf("xz: bad block header padding: %w", errXZ)
		}
	}
	for _, f := range filters[:len(filters)-1] {
		if f.id != xzFilterX86 && f.id != xzFilterARM64 {
			return nil, fmt.Errorf("xz: %s: %w", xzFilterName(f.id), ErrUnsupportedCompression)
		}
		if len(f.props) != 0 && len(f.props) != 4 {
			return nil, fmt.Errorf("xz: BCJ properties: %w", errXZ)
		}
	}
	return filters, nil
}

// lzma2DictSize decodes the LZMA2 dictionary-size property byte (0..40).
func lzma2DictSize(p byte) int64 {
	if p == 40 {
		return 1<<32 - 1
	}
	return int64(2|p&1) << (p/2 + 11)
}

func undoBCJ(f xzFilter, b []byte) error {
	var start uint32
	if len(f.props) == 4 {
		start = binary.LittleEndian.Uint32(f.props)
	}
	switch f.id {
	case xzFilterX86:
		unBCJX86(b, start)
	case xzFilterARM64:
		if start%4 != 0 {
			return fmt.Errorf("xz: arm64 BCJ start offset %d: %w", start, errXZ)
		}
		unBCJARM64(b, start)
	}
	return nil
}

func xzCheckOK(kind byte, data, sum []byte) bool {
	switch kind {
	case 1:
		return crc32.ChecksumIEEE(data) == binary.LittleEndian.Uint32(sum)
	case 4:
		return crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)) == binary.LittleEndian.Uint64(sum)
	case 10:
		h := sha256.Sum256(data)
		return bytes.Equal(h[:], sum)
	}
	return true
}

// appendLimited reads r to its end, appending to out, keeping the total at
// most limit bytes.
func appendLimited(ctx context.Context, out []byte, r io.Reader, limit int64) ([]byte, error) {
	const step = 1 << 20
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(out) == cap(out) {
			grow := min(max(int64(cap(out)), step), limit+1-int64(len(out)), 64<<20)
			if grow <= 0 {
				return nil, fmt.Errorf("expands beyond %d bytes: %w", limit, ErrDecompressionBudget)
			}
			out = append(out, make([]byte, grow)...)[:len(out)]
		}
		n, err := r.Read(out[len(out):min(cap(out), len(out)+step)])
		out = out[:len(out)+n]
		if int64(len(out)) > limit {
			return nil, fmt.Errorf("expands beyond %d bytes: %w", limit, ErrDecompressionBudget)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
