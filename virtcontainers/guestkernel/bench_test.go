package guestkernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Benchmarks recorded in BENCHMARKS.md ("Guest kernel inspection").
// "cold" means not in our cache (the file itself is in the page cache, as it
// is when a sandbox starts); "cached" is a hit in Options.CacheDir.

type benchImage struct{ name, path string }

// benchImages lists the real images present plus synthetic ones that are
// always there.
func benchImages(b *testing.B) []benchImage {
	b.Helper()
	var imgs []benchImage
	for _, c := range []struct{ name, rel string }{
		{"debian-bzImage-lz4", "debian-kernels/bookworm-cloud-amd64/vmlinuz"},
		{"debian-bzImage-zstd-btf", "debian-kernels/trixie-cloud-amd64/vmlinuz"},
		{"debian-arm64-Image-btf", "debian-kernels/trixie-arm64/vmlinuz"},
		{"debian-ppc64le-vmlinux", "debian-kernels/bookworm-ppc64el/vmlinux"},
	} {
		if p := filepath.Join(testutil.CacheDir(), c.rel); fileExists(p) {
			imgs = append(imgs, benchImage{c.name, p})
		}
	}
	if dir, err := testutil.FindGuestKernels(); err == nil {
		imgs = append(imgs,
			benchImage{"tiny-bzImage-btf", filepath.Join(dir, "fixed", "bzImage")},
			benchImage{"tiny-vmlinux-btf", filepath.Join(dir, "fixed", "vmlinux")},
			benchImage{"tiny-vmlinux-nobtf", filepath.Join(dir, "fixed-nobtf", "vmlinux")})
	}
	vmlinux := kernelELF(elfArches[0], bannerFixed61, makeBTF(b, binary.LittleEndian, shapeFixed))
	dir := b.TempDir()
	for name, img := range map[string][]byte{
		"synthetic-vmlinux-btf": vmlinux,
		"synthetic-bzImage-gzip": makeBzImage("6.1.76 (ksg@build) #1 SMP",
			gzipBytes(vmlinux)),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			b.Fatal(err)
		}
		imgs = append(imgs, benchImage{name, p})
	}
	return imgs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BenchmarkInspect: cold header path, cold full inspection (payload
// decompressed, BTF read) and a cache hit, per image.
func BenchmarkInspect(b *testing.B) {
	ctx := context.Background()
	for _, img := range benchImages(b) {
		for _, mode := range []struct {
			name string
			opts func(cacheDir string) verdict.Options
		}{
			{"cold-header", func(string) verdict.Options { return verdict.Options{HeaderOnly: true} }},
			{"cold-full", func(string) verdict.Options { return verdict.Options{} }},
			{"cached", func(dir string) verdict.Options { return verdict.Options{CacheDir: dir} }},
		} {
			b.Run(img.name+"/"+mode.name, func(b *testing.B) {
				opts := mode.opts(b.TempDir())
				if _, err := Inspect(ctx, img.path, opts); err != nil { // warm the page cache (and our cache)
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if _, err := Inspect(ctx, img.path, opts); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// btfOf returns the .BTF bytes of an ELF file or of a bzImage's payload.
func btfOf(b *testing.B, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if isBzImage(data) {
		setup := (int(data[0x1f1]) + 1) * 512
		start := setup + int(binary.LittleEndian.Uint32(data[0x248:]))
		payload := data[start : start+int(binary.LittleEndian.Uint32(data[0x24c:]))]
		kind := sniffCompression(payload)
		stream, claimed := sizeAppended(kind, payload)
		if data, err = decompress(context.Background(), kind, stream, verdict.DefaultMaxDecompressed, claimed); err != nil {
			b.Fatal(err)
		}
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	s := f.Section(".BTF")
	if s == nil {
		b.Skip("no .BTF")
	}
	blob, err := s.Data()
	if err != nil {
		b.Fatal(err)
	}
	return blob
}

// BenchmarkBTF: deciding from BTF bytes already in memory. analyze is what
// Inspect does (string table first, cilium/ebpf only when FUSE names are
// there); full-parse is cilium/ebpf's whole-spec load for comparison.
func BenchmarkBTF(b *testing.B) {
	var blobs []benchImage
	if p := filepath.Join(testutil.CacheDir(), "debian-kernels/bookworm-cloud-amd64/vmlinuz"); fileExists(p) {
		blobs = append(blobs, benchImage{"debian-6.1-no-fuse", p})
	}
	if p := filepath.Join(testutil.CacheDir(), "debian-kernels/trixie-cloud-amd64/vmlinuz"); fileExists(p) {
		blobs = append(blobs, benchImage{"debian-6.12-fuse", p})
	}
	if dir, err := testutil.FindGuestKernels(); err == nil {
		blobs = append(blobs, benchImage{"tiny-6.1-fuse", filepath.Join(dir, "fixed", "vmlinux")})
	}
	if len(blobs) == 0 {
		b.Skip("no real image with BTF: run test/setup")
	}
	for _, img := range blobs {
		blob := btfOf(b, img.path)
		b.Run(img.name+"/analyze", func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			for b.Loop() {
				if _, err := analyzeBTF(blob); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(img.name+"/full-parse", func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			for b.Loop() {
				spec, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
				if err != nil {
					b.Fatal(err)
				}
				var s *btf.Struct
				_ = spec.TypeByName("fuse_inode", &s)
			}
		})
	}
}

// BenchmarkTools runs whole processes on the same images, side by side:
// file(1), strings | grep 'Linux version', and the built kata-runtime
// (`make bench` builds bin/ first) cold and with a warm cache.
func BenchmarkTools(b *testing.B) {
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "bin", "kata-runtime")
	if !fileExists(bin) {
		b.Skip("bin/kata-runtime missing: run make build")
	}
	for _, img := range benchImages(b) {
		cacheDir := b.TempDir()
		for _, tool := range []struct {
			name string
			argv []string
		}{
			{"file", []string{"file", img.path}},
			{"strings-grep", []string{"sh", "-c", "strings -a \"$0\" | grep 'Linux version'", img.path}},
			{"kata-runtime-header", []string{bin, "guest-kernel", "inspect", "--json", "--header-only", img.path}},
			{"kata-runtime-cold", []string{bin, "guest-kernel", "inspect", "--json", img.path}},
			{"kata-runtime-cached", []string{bin, "guest-kernel", "inspect", "--json", "--cache-dir", cacheDir, img.path}},
		} {
			b.Run(img.name+"/"+tool.name, func(b *testing.B) {
				if _, err := exec.LookPath(tool.argv[0]); err != nil {
					b.Skipf("%s missing", tool.argv[0])
				}
				_ = exec.Command(tool.argv[0], tool.argv[1:]...).Run() // warm up; grep finds nothing in compressed images
				for b.Loop() {
					_ = exec.Command(tool.argv[0], tool.argv[1:]...).Run()
				}
			})
		}
	}
}
