package guestkernel

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// codeLike returns bytes that exercise BCJ filters: x86 call/jmp opcodes with
// near and far operands, arm64 BL/ADRP words, and text.
func codeLike(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		switch rng.IntN(6) {
		case 0:
			b = append(b, 0xe8)
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(rng.IntN(1<<20)-1<<19)))
		case 1:
			b = append(b, 0xe9, byte(rng.Uint32()), byte(rng.Uint32()), 0xe8, 0xff)
		case 2:
			b = binary.LittleEndian.AppendUint32(b, 0x94000000|rng.Uint32()&0x03ffffff)
		case 3:
			b = binary.LittleEndian.AppendUint32(b, 0x90000000|rng.Uint32()&0x60ffffe0|uint32(rng.IntN(32)))
		case 4:
			b = append(b, "printk: Linux version shown at boot (not a banner)\n"...)
		default:
			for range rng.IntN(12) {
				b = append(b, byte(rng.Uint32()))
			}
		}
	}
	return b[:n]
}

// TestXZAgainstXZUtils decompresses what xz(1) wrote, with the kernel's
// options and with each BCJ filter and check type we read.
func TestXZAgainstXZUtils(t *testing.T) {
	data := codeLike(1<<20+5, 1)
	for _, tc := range []struct {
		name string
		argv []string
	}{
		{"kernel x86", []string{"xz", "--check=crc32", "--x86", "--lzma2=,dict=32MiB"}},
		{"x86 start offset", []string{"xz", "--check=crc32", "--x86=start=4096", "--lzma2=preset=6"}},
		{"arm64", []string{"xz", "--check=crc32", "--arm64", "--lzma2=,dict=32MiB"}},
		{"arm64 start offset", []string{"xz", "--check=crc64", "--arm64=start=8192", "--lzma2=preset=1"}},
		{"plain crc64", []string{"xz", "--check=crc64"}},
		{"sha256", []string{"xz", "--check=sha256", "-1"}},
		{"no check", []string{"xz", "--check=none", "-0"}},
		{"several blocks", []string{"xz", "--check=crc32", "--x86", "--lzma2=preset=0", "--block-size=256KiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			compressed := runFilter(t, data, tc.argv...)
			out, err := decompress(context.Background(), compXZ, compressed, verdict.DefaultMaxDecompressed, 0)
			require.NoError(t, err)
			require.Equal(t, len(data), len(out))
			require.True(t, string(data) == string(out), "decompressed bytes differ")
		})
	}
}

func TestXZUnsupportedFilter(t *testing.T) {
	compressed := runFilter(t, codeLike(64<<10, 2), "xz", "--powerpc", "--lzma2=preset=0")
	_, err := decompress(context.Background(), compXZ, compressed, verdict.DefaultMaxDecompressed, 0)
	require.ErrorIs(t, err, ErrUnsupportedCompression)
	require.ErrorContains(t, err, "powerpc BCJ")
}

func TestXZCorrupt(t *testing.T) {
	compressed := runFilter(t, codeLike(256<<10, 3), "xz", "--check=crc32", "--x86", "--lzma2=preset=6")
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"stream header checksum", func(b []byte) []byte { b[8] ^= 1; return b }},
		{"block header checksum", func(b []byte) []byte { b[13] ^= 0x40; return b }},
		{"data", func(b []byte) []byte { b[len(b)/2] ^= 0x55; return b }},
		{"header only", func(b []byte) []byte { return b[:12] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(append([]byte(nil), compressed...))
			_, err := decompress(context.Background(), compXZ, b, verdict.DefaultMaxDecompressed, 0)
			require.Error(t, err)
		})
	}
}

// TestDecompressKbuild round-trips data through each tool exactly as kbuild
// runs it, with kbuild's appended size, as a bzImage payload carries it.
func TestDecompressKbuild(t *testing.T) {
	data := codeLike(512<<10, 4)
	for _, kind := range []string{compGzip, compBzip2, compLZMA, compXZ, compLZ4, compZstd} {
		t.Run(kind, func(t *testing.T) {
			payload := kbuildCompress(t, kind, data)
			if kind != compGzip {
				payload = withSize(payload, len(data))
			}
			require.Equal(t, kind, sniffCompression(payload))
			stream, claimed := sizeAppended(kind, payload)
			require.EqualValues(t, len(data), claimed)
			out, err := decompress(context.Background(), kind, stream, verdict.DefaultMaxDecompressed, claimed)
			require.NoError(t, err)
			require.True(t, string(data) == string(out), "decompressed bytes differ")
		})
	}
	t.Run(compLZO, func(t *testing.T) {
		payload := kbuildCompress(t, compLZO, data)
		require.Equal(t, compLZO, sniffCompression(payload))
		_, err := decompress(context.Background(), compLZO, payload, verdict.DefaultMaxDecompressed, 0)
		require.ErrorIs(t, err, ErrUnsupportedCompression)
	})
}

// TestDecompressionBudget: every decoder stops at the budget, whether the
// appended size tells the truth or lies.
func TestDecompressionBudget(t *testing.T) {
	data := make([]byte, 8<<20) // zeros: tiny compressed, large expanded
	const limit = 1 << 20
	for _, kind := range []string{compGzip, compBzip2, compLZMA, compXZ, compLZ4, compZstd} {
		t.Run(kind, func(t *testing.T) {
			payload := kbuildCompress(t, kind, data)
			for _, hint := range []int64{0, 1000, len64(data)} {
				_, err := decompress(context.Background(), kind, payload, limit, hint)
				require.ErrorIs(t, err, ErrDecompressionBudget, "hint %d", hint)
			}
			out, err := decompress(context.Background(), kind, payload, int64(len(data)), 0)
			require.NoError(t, err, "exactly at the budget")
			require.Len(t, out, len(data))
		})
	}
}

func len64(b []byte) int64 { return int64(len(b)) }

func TestDecompressCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	payload := kbuildCompress(t, compGzip, make([]byte, 4<<20))
	_, err := decompress(ctx, compGzip, payload, verdict.DefaultMaxDecompressed, 0)
	require.ErrorIs(t, err, context.Canceled)
}

func TestBCJIdentityOutsideBranches(t *testing.T) {
	// Text without E8/E9 bytes or branch words is left alone by both filters.
	text := []byte("Linux version 6.1.76 (ksg@build) (gcc) #1 SMP PREEMPT_DYNAMIC\n")
	b := append([]byte(nil), text...)
	unBCJX86(b, 0)
	require.Equal(t, text, b)
	unBCJARM64(b, 0)
	require.Equal(t, text, b)
}
