package guestkernel

import (
	"bytes"
	"compress/bzip2"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// Payload compressions, as the Report names them.
const (
	compNone  = "none"
	compGzip  = "gzip"
	compBzip2 = "bzip2"
	compLZMA  = "lzma"
	compXZ    = "xz"
	compLZO   = "lzo"
	compLZ4   = "lz4"
	compZstd  = "zstd"
)

var (
	// ErrDecompressionBudget is wrapped by errors for payloads that expand
	// beyond Options.MaxDecompressed.
	ErrDecompressionBudget = errors.New("decompression budget exceeded")
	// ErrUnsupportedCompression is wrapped by errors for payloads this build
	// cannot decompress (lzo: no maintained Go library; some xz filters).
	ErrUnsupportedCompression = errors.New("unsupported compression")
)

// zstdKbuildWindow is the window `zstd -22 --ultra` declares (2^27).
const zstdKbuildWindow = 128 << 20

// sniffCompression names the compression whose magic starts b, or "".
// The magics are those the kernel's own decompressors check
// (lib/decompress.c), plus the lz4 frame format for standalone files.
func sniffCompression(b []byte) string {
	has := func(p string) bool { return bytes.HasPrefix(b, []byte(p)) }
	switch {
	case has("\x1f\x8b"):
		return compGzip
	case has("BZh") && len(b) > 3 && b[3] >= '1' && b[3] <= '9':
		return compBzip2
	case has("\xfd7zXZ\x00"):
		return compXZ
	case has("\x28\xb5\x2f\xfd"):
		return compZstd
	case has("\x02\x21\x4c\x18"), has("\x04\x22\x4d\x18"):
		return compLZ4
	case has("\x89LZO\x00\r\n\x1a\n"):
		return compLZO
	case has("\x5d\x00\x00"):
		return compLZMA
	}
	return ""
}

// sizeAppended splits the little-endian size that kbuild's size_append puts
// after every compressed x86 payload but gzip's (whose trailer already ends
// with it) and returns the stream without it plus the claimed size.
func sizeAppended(kind string, data []byte) ([]byte, int64) {
	if len(data) < 4 {
		return data, 0
	}
	claimed := int64(binary.LittleEndian.Uint32(data[len(data)-4:]))
	if kind == compGzip {
		return data, claimed
	}
	return data[:len(data)-4], claimed
}

// decompress expands data, compressed with kind, into at most limit bytes.
// hint, when plausible, sizes the output buffer up front.
func decompress(ctx context.Context, kind string, data []byte, limit, hint int64) ([]byte, error) {
	if hint > limit {
		return nil, fmt.Errorf("%s payload claims %d bytes, more than the %d-byte limit: %w", kind, hint, limit, ErrDecompressionBudget)
	}
	// Kernels compress 3–10x: a larger claim only sizes the buffer
	// wrongly, so it is not trusted for preallocation.
	if hint > 32*int64(len(data))+1<<20 {
		hint = 0
	}
	src := bytes.NewReader(data)
	var r io.Reader
	switch kind {
	case compGzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case compBzip2:
		r = bzip2.NewReader(src)
	case compLZMA:
		lr, err := newLZMAReader(data, limit)
		if err != nil {
			return nil, fmt.Errorf("lzma: %w", err)
		}
		r = lr
	case compXZ:
		return decompressXZ(ctx, data, limit, hint)
	case compLZ4:
		lr := lz4.NewReader(src)
		if err := lr.Apply(lz4.ConcurrencyOption(1)); err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		r = lr
	case compZstd:
		return decompressZstd(data, limit, hint)
	case compLZO:
		return nil, fmt.Errorf("lzo: no maintained Go LZO decoder is available: %w", ErrUnsupportedCompression)
	default:
		return nil, fmt.Errorf("%q: %w", kind, ErrUnsupportedCompression)
	}
	out, err := readLimited(ctx, r, limit, hint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return out, nil
}

// decompressZstd decodes all frames straight into the output buffer, which
// then serves as the decoder's history: no separate window buffer. kbuild's
// `zstd -22 --ultra` reads stdin and so declares a 128 MiB window whatever
// the kernel's size (Debian 13's cloud kernel does); the decoder may use up
// to that or the budget, whichever is larger, and the budget is checked on
// the result.
func decompressZstd(data []byte, limit, hint int64) ([]byte, error) {
	window := min(max(limit, zstdKbuildWindow), zstd.MaxWindowSize)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(window)), zstd.WithDecoderMaxWindow(uint64(window)))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer dec.Close()
	initial := int64(1 << 20)
	if hint > 0 && hint <= limit {
		initial = hint
	}
	out, err := dec.DecodeAll(data, make([]byte, 0, min(initial, limit)))
	switch {
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return nil, fmt.Errorf("zstd: %w: %w", err, ErrDecompressionBudget)
	case err != nil:
		return nil, fmt.Errorf("zstd: %w", err)
	case int64(len(out)) > limit:
		return nil, fmt.Errorf("zstd: expands beyond %d bytes: %w", limit, ErrDecompressionBudget)
	}
	return out, nil
}

// newLZMAReader reads a .lzma stream. Matches cannot reach further back than
// the output, which stops at limit, so a dictionary larger than limit is
// never needed: the header's size is lowered to it, bounding memory by the
// budget without refusing the 64 MiB kbuild's `lzma -9` declares.
func newLZMAReader(data []byte, limit int64) (io.Reader, error) {
	const headerLen = 13
	if len(data) < headerLen {
		return nil, errors.New("truncated header")
	}
	header := append([]byte(nil), data[:headerLen]...)
	dict := int64(binary.LittleEndian.Uint32(header[1:]))
	dictCap := min(max(limit, lzma.MinDictCap), 1<<30)
	if dict > dictCap {
		binary.LittleEndian.PutUint32(header[1:], uint32(dictCap))
	}
	return lzma.ReaderConfig{DictCap: int(dictCap)}.NewReader(
		io.MultiReader(bytes.NewReader(header), bytes.NewReader(data[headerLen:])))
}

// readLimited reads r to its end into a buffer of at most limit bytes.
func readLimited(ctx context.Context, r io.Reader, limit, hint int64) ([]byte, error) {
	initial := int64(1 << 20)
	if hint > 0 && hint <= limit {
		// +1 so a stream of exactly hint bytes ends without a regrow.
		initial = hint + 1
	}
	return appendLimited(ctx, make([]byte, 0, min(initial, limit+1)), r, limit)
}
