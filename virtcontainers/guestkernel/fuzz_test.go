package guestkernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Fuzz targets for every parser of outside bytes, seeded with valid images.
// `make fuzz` runs each; `go test` runs the seeds.

const fuzzLimit = 8 << 20

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func zstdBytes(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func lz4LegacyBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	_ = w.Apply(lz4.LegacyOption(true))
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func xzBytes(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

// seedImages are small valid images of every format.
func seedImages(t testing.TB) [][]byte {
	vmlinux := kernelELF(elfArches[0], bannerFixed61, makeBTF(t, binary.LittleEndian, shapeFixed))
	arm := makeArm64Image(append([]byte(bannerVuln61+"\n\x00"), makeBTF(t, binary.LittleEndian, shapeVuln)...))
	header := "6.1.76 (ksg@build) #1 SMP"
	return [][]byte{
		vmlinux,
		kernelELF(elfArches[2], bannerDebian, makeBTF(t, binary.BigEndian, shapeNoFS)),
		makeBzImage(header, gzipBytes(vmlinux)),
		makeBzImage(header, withSize(zstdBytes(vmlinux), len(vmlinux))),
		makeBzImage(header, withSize(lz4LegacyBytes(vmlinux), len(vmlinux))),
		makeBzImage(header, withSize(xzBytes(vmlinux), len(vmlinux))),
		arm,
		gzipBytes(arm),
		makeZboot("gzip", 0xaa64, gzipBytes(arm)),
		makeZboot("zstd22", 0xaa64, zstdBytes(arm)),
	}
}

// inspectNoForeignPanic runs the inspector; a panic inside debug/elf is
// recovered in production (parse) and tolerated here, any other panic is a bug.
func inspectNoForeignPanic(t *testing.T, b []byte, opts verdict.Options) (rep *verdict.Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			stack := string(debug.Stack())
			if !strings.Contains(stack, "debug/elf.") {
				t.Fatalf("panic: %v\n%s", p, stack)
			}
			err = fmt.Errorf("debug/elf panic: %v", p)
		}
	}()
	rep = &verdict.Report{}
	in := &inspector{limit: opts.Limit(), headerOnly: opts.HeaderOnly}
	return rep, in.inspect(context.Background(), bytes.NewReader(b), int64(len(b)), rep)
}

func FuzzInspect(f *testing.F) {
	for _, seed := range seedImages(f) {
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, b []byte, headerOnly bool) {
		rep, err := inspectNoForeignPanic(t, b, verdict.Options{MaxDecompressed: fuzzLimit, HeaderOnly: headerOnly})
		if err != nil {
			return
		}
		if rep.Format == "" {
			t.Fatalf("accepted without a format: %+v", rep)
		}
		verdict.Judge(rep, nil)
		if rep.Verdict == verdict.Fixed && rep.Evidence == verdict.EvidenceBTF && !rep.BTFHasFix {
			t.Fatalf("fixed by BTF without the fix: %+v", rep)
		}
	})
}

func FuzzAnalyzeBTF(f *testing.F) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, shape := range []btfShape{shapeFixed, shapeVuln, shapeNoFS} {
			f.Add(makeBTF(f, order, shape))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		facts, err := analyzeBTF(b)
		if err != nil && facts != (btfFacts{}) {
			t.Fatalf("error with facts: %v %+v", err, facts)
		}
		if facts.Fix && !facts.FUSE {
			t.Fatalf("fix without FUSE: %+v", facts)
		}
		if _, err := scanBTF(context.Background(), bytes.NewReader(b), 0, int64(len(b))); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzDecompressXZ(f *testing.F) {
	data := codeLike(64<<10, 11)
	f.Add(xzBytes(data))
	f.Add(runFilter(f, data, "xz", "--check=crc32", "--x86", "--lzma2=preset=6"))
	f.Add(runFilter(f, data, "xz", "--check=crc64", "--arm64=start=4096", "--lzma2=preset=0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decompressXZ(context.Background(), b, fuzzLimit, 0)
		if err == nil && int64(len(out)) > fuzzLimit {
			t.Fatalf("%d bytes beyond the limit", len(out))
		}
	})
}

func FuzzDecompress(f *testing.F) {
	data := codeLike(32<<10, 12)
	f.Add(compGzip, gzipBytes(data))
	f.Add(compZstd, zstdBytes(data))
	f.Add(compLZ4, lz4LegacyBytes(data))
	f.Add(compLZMA, runFilter(f, data, "lzma", "-9"))
	f.Add(compBzip2, runFilter(f, data, "bzip2", "-9"))
	f.Fuzz(func(t *testing.T, kind string, b []byte) {
		out, err := decompress(context.Background(), kind, b, fuzzLimit, int64(len(b)))
		if err == nil && int64(len(out)) > fuzzLimit {
			t.Fatalf("%d bytes beyond the limit", len(out))
		}
	})
}

func FuzzBanner(f *testing.F) {
	f.Add([]byte("junk\x00" + bannerDebian + "\n\x00more"))
	f.Add([]byte("Linux version %s\nLinux version 6.1.76 (a@b) #1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := bannerIn(b)
		if s != "" && (!strings.HasPrefix(s, bannerPrefix) || strings.ContainsAny(s, "\n\x00") || len(s) > maxBanner) {
			t.Fatalf("bad banner %q", s)
		}
		_ = releaseOf(s)
	})
}

// TestFuzzSeedsAreValid keeps the fuzz seeds meaningful: each is an image
// the inspector reads.
func TestFuzzSeedsAreValid(t *testing.T) {
	for i, seed := range seedImages(t) {
		rep, err := inspectNoForeignPanic(t, seed, verdict.Options{})
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if rep.Release == "" || !rep.BTFPresent {
			t.Fatalf("seed %d: %+v", i, rep)
		}
	}
}
