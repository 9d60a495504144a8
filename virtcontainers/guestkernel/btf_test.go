package guestkernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAnalyzeBTF(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, tc := range []struct {
			name       string
			shape      btfShape
			want       btfFacts
			stringOnly bool
		}{
			{"fixed", shapeFixed, btfFacts{Present: true, FUSE: true, Fix: true, Submounts: true}, false},
			{"vulnerable", shapeVuln, btfFacts{Present: true, FUSE: true, Submounts: true}, false},
			{"fuse before submounts", btfShape{fuse: true}, btfFacts{Present: true, FUSE: true}, false},
			// Only a forward declaration and a member named like the fix:
			// the full parse must not count them.
			{"no fuse types", shapeNoFS, btfFacts{Present: true}, false},
		} {
			t.Run(order.String()+"/"+tc.name, func(t *testing.T) {
				got, err := analyzeBTF(makeBTF(t, order, tc.shape))
				require.NoError(t, err)
				got.StringOnly = false
				require.Equal(t, tc.want, got)
			})
		}
	}
}

func TestAnalyzeBTFStringTableShortcut(t *testing.T) {
	// BTF without any FUSE name is decided from the string table alone.
	b := makeBTF(t, binary.LittleEndian, shapeNoFS)
	b = bytes.ReplaceAll(b, []byte("fuse_submount_lookup\x00"), []byte("xxxx_submount_lookup\x00"))
	b = bytes.ReplaceAll(b, []byte("fuse_inode\x00"), []byte("xxxx_inode\x00"))
	got, err := analyzeBTF(b)
	require.NoError(t, err)
	require.Equal(t, btfFacts{Present: true, StringOnly: true}, got)
}

func TestAnalyzeBTFMalformed(t *testing.T) {
	good := makeBTF(t, binary.LittleEndian, shapeFixed)
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:10] }},
		{"magic", func(b []byte) []byte { b[0] = 0; return b }},
		{"version", func(b []byte) []byte { b[2] = 9; return b }},
		{"header length", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 8); return b }},
		{"string section beyond blob", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[20:], 1<<30); return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-20] }},
		{"overlapping sections", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 0); return b }},
		{"types garbage", func(b []byte) []byte {
			for i := 24; i < 60; i++ {
				b[i] = 0xff
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := analyzeBTF(tc.mutate(append([]byte(nil), good...)))
			require.Error(t, err)
		})
	}
}

func TestScanBTF(t *testing.T) {
	blob := makeBTF(t, binary.LittleEndian, shapeFixed)
	// A decoy signature whose sizes do not fit comes first.
	decoy := append([]byte(nil), blob[:24]...)
	binary.LittleEndian.PutUint32(decoy[20:], 1<<28)
	var img bytes.Buffer
	img.Write(codeLike(3<<20, 7)) // past one scan chunk
	img.Write(decoy)
	img.Write(codeLike(1000, 8))
	img.Write(blob)
	img.Write([]byte("tail"))
	got, err := scanBTF(context.Background(), bytes.NewReader(img.Bytes()), 0, int64(img.Len()))
	require.NoError(t, err)
	require.Equal(t, blob, got)

	none, err := scanBTF(context.Background(), bytes.NewReader(codeLike(1<<20, 9)), 0, 1<<20)
	require.NoError(t, err)
	require.Nil(t, none)
}

func TestScanBanner(t *testing.T) {
	var img bytes.Buffer
	img.Write(codeLike(scanChunk-20, 10))
	img.WriteString("Linux version %s (%s)\n") // a format string is no banner
	img.WriteString(bannerDebian + "\n")       // straddles the first chunk boundary
	got, err := scanBanner(context.Background(), bytes.NewReader(img.Bytes()), 0, int64(img.Len()))
	require.NoError(t, err)
	require.Equal(t, bannerDebian, got)

	for _, bad := range []string{
		"Linux version 6.1.0\n",              // no build info
		"Linux version x (a) #1\n",           // release not a number
		"Linux version 6.1 (a) #1 \x01bad\n", // control byte
		"Linux version 6.1 (a) #1",           // no newline
	} {
		got, err := scanBanner(context.Background(), bytes.NewReader([]byte(bad)), 0, int64(len(bad)))
		require.NoError(t, err)
		require.Empty(t, got, "%q", bad)
	}
}
