package guestkernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Image formats, as the Report names them.
const (
	formatELF     = "elf"
	formatBzImage = "bzimage"
	formatArm64   = "arm64-image"
	formatZboot   = "efi-zboot"
	formatRaw     = "raw"
)

// errNotKernel is wrapped by errors for files that are no kernel image.
var errNotKernel = errors.New("not a Linux kernel image")

// inspector reads one image. Its methods fill a Report's facts (everything
// but the verdict); errors mean the image could not be read or parsed.
type inspector struct {
	limit      int64
	headerOnly bool
}

func isELF(b []byte) bool { return bytes.HasPrefix(b, []byte(elf.ELFMAG)) }

// isBzImage: boot_flag 0xAA55 at 0x1fe and "HdrS" at 0x202 (x86 boot protocol).
func isBzImage(b []byte) bool {
	return len(b) >= 0x250 && b[0x1fe] == 0x55 && b[0x1ff] == 0xaa && string(b[0x202:0x206]) == "HdrS"
}

// isZboot: "MZ" and the "zimg" image type of drivers/firmware/efi/libstub/zboot-header.S.
func isZboot(b []byte) bool {
	return len(b) >= 0x40 && string(b[0:2]) == "MZ" && string(b[4:8]) == "zimg"
}

// isArm64Image: the "ARM\x64" magic at 0x38 of the arm64 Image header.
func isArm64Image(b []byte) bool {
	return len(b) >= 0x40 && string(b[0x38:0x3c]) == "ARM\x64"
}

// inspect identifies the image in r (size bytes) and reads its facts.
func (in *inspector) inspect(ctx context.Context, r io.ReaderAt, size int64, rep *verdict.Report) error {
	head := make([]byte, min(size, 4096))
	if n, err := r.ReadAt(head, 0); int64(n) != int64(len(head)) {
		return fmt.Errorf("read header: %w", err)
	}
	if size < 64 {
		return fmt.Errorf("only %d bytes: %w", size, errNotKernel)
	}
	switch {
	case isELF(head):
		rep.Format, rep.Compression = formatELF, compNone
		return in.elf(ctx, r, size, rep)
	case isBzImage(head):
		return in.bzImage(ctx, r, size, head, rep)
	case isZboot(head):
		return in.zboot(ctx, r, size, head, rep)
	case isArm64Image(head):
		rep.Format, rep.Compression, rep.Arch = formatArm64, compNone, "arm64"
		return in.raw(ctx, r, size, rep)
	}
	if kind := sniffCompression(head); kind != "" {
		return in.compressedFile(ctx, r, size, kind, rep)
	}
	return fmt.Errorf("unrecognised format (expected an ELF vmlinux, x86 bzImage, arm64 Image, EFI zboot image or a compressed kernel): %w", errNotKernel)
}

// elfArch names the architecture of an ELF kernel as Kata and uname do.
func elfArch(f *elf.File) string {
	switch f.Machine {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_386:
		return "x86"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_S390:
		if f.Class == elf.ELFCLASS64 {
			return "s390x"
		}
		return "s390"
	case elf.EM_PPC64:
		if f.Data == elf.ELFDATA2LSB {
			return "ppc64le"
		}
		return "ppc64"
	case elf.EM_RISCV:
		return "riscv64"
	case elf.EM_LOONGARCH:
		return "loongarch64"
	}
	return ""
}

// elf reads an ELF vmlinux: its machine, the banner (in .rodata on every
// architecture, so that section is scanned first) and its .BTF section.
func (in *inspector) elf(ctx context.Context, r io.ReaderAt, size int64, rep *verdict.Report) error {
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return fmt.Errorf("ELF: %w", err)
	}
	rep.Arch = elfArch(f)
	inFile := func(s *elf.Section) bool {
		return s.Type == elf.SHT_PROGBITS && s.Offset <= uint64(size) && s.Size <= uint64(size)-s.Offset
	}
	var banner string
	sections := make([]*elf.Section, 0, len(f.Sections))
	if s := f.Section(".rodata"); s != nil {
		sections = append(sections, s)
	}
	for _, s := range f.Sections {
		if s.Name != ".rodata" && s.Flags&elf.SHF_ALLOC != 0 {
			sections = append(sections, s)
		}
	}
	for _, s := range sections {
		if !inFile(s) {
			continue
		}
		if banner, err = scanBanner(ctx, r, int64(s.Offset), int64(s.Size)); err != nil || banner != "" {
			break
		}
	}
	if err == nil && banner == "" {
		banner, err = scanBanner(ctx, r, 0, size)
	}
	if err != nil {
		return fmt.Errorf("ELF: %w", err)
	}
	setBanner(rep, banner)
	if s := f.Section(".BTF"); s != nil {
		if !inFile(s) || s.Size > maxBTF {
			rep.BTFPresent = true
			rep.Note = "BTF unreadable: .BTF section out of the file's bounds"
		} else {
			blob := make([]byte, s.Size)
			if _, err := r.ReadAt(blob, int64(s.Offset)); err != nil {
				return fmt.Errorf("ELF: read .BTF: %w", err)
			}
			in.btf(blob, rep)
		}
	}
	return requireKernel(rep)
}

// btf records what a BTF blob says; an unparsable blob is a note, not an
// error, so a newer BTF revision still leaves the version to decide.
func (in *inspector) btf(blob []byte, rep *verdict.Report) {
	facts, err := analyzeBTF(blob)
	if err != nil {
		rep.BTFPresent = true
		rep.Note = "BTF unreadable: " + err.Error()
		return
	}
	facts.apply(rep)
}

// raw reads an image without section headers (arm64 Image, a payload that
// is no ELF): the banner and BTF blob are found by scanning.
func (in *inspector) raw(ctx context.Context, r io.ReaderAt, size int64, rep *verdict.Report) error {
	banner, err := scanBanner(ctx, r, 0, size)
	if err != nil {
		return err
	}
	setBanner(rep, banner)
	blob, err := scanBTF(ctx, r, 0, size)
	if err != nil {
		return err
	}
	if blob != nil {
		in.btf(blob, rep)
	}
	return requireKernel(rep)
}

func setBanner(rep *verdict.Report, banner string) {
	if banner != "" {
		rep.Banner = banner
		rep.Release = releaseOf(banner)
	}
}

// requireKernel refuses images with neither banner nor BTF: whatever they
// are, nothing in them says which kernel they hold.
func requireKernel(rep *verdict.Report) error {
	if rep.Banner == "" && !rep.BTFPresent {
		return fmt.Errorf("no \"Linux version\" banner and no BTF found: %w", errNotKernel)
	}
	return nil
}

// payload reads a decompressed kernel: an ELF (x86 bzImage), an arm64 Image
// (EFI zboot, Image.gz) or anything else by scanning.
func (in *inspector) payload(ctx context.Context, data []byte, rep *verdict.Report) (format string, err error) {
	r := bytes.NewReader(data)
	size := int64(len(data))
	switch {
	case isELF(data):
		return formatELF, in.elf(ctx, r, size, rep)
	case isArm64Image(data):
		rep.Arch = "arm64"
		return formatArm64, in.raw(ctx, r, size, rep)
	default:
		return formatRaw, in.raw(ctx, r, size, rep)
	}
}

func readAt(r io.ReaderAt, off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if got, err := r.ReadAt(b, off); int64(got) != n {
		return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
	}
	return b, nil
}

// bzImage reads an x86 bzImage: the version string the setup header points
// at, then (unless headerOnly) the compressed vmlinux at payload_offset.
func (in *inspector) bzImage(ctx context.Context, r io.ReaderAt, size int64, head []byte, rep *verdict.Report) error {
	rep.Format, rep.Arch = formatBzImage, "x86"
	setupSects := int64(head[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	protocol := binary.LittleEndian.Uint16(head[0x206:])
	if protocol >= 0x20c && binary.LittleEndian.Uint16(head[0x236:])&1 != 0 {
		rep.Arch = "x86_64" // XLF_KERNEL_64
	}
	if ptr := int64(binary.LittleEndian.Uint16(head[0x20e:])); ptr != 0 && ptr+0x200 < size {
		b, err := readAt(r, ptr+0x200, min(256, size-ptr-0x200))
		if err != nil {
			return fmt.Errorf("bzImage: kernel_version: %w", err)
		}
		if i := bytes.IndexByte(b, 0); i > 0 && printable(b[:i]) {
			rep.Banner = string(b[:i])
			rep.Release = releaseOf(rep.Banner)
		}
	}
	if protocol < 0x208 {
		rep.Note = fmt.Sprintf("boot protocol %d.%02d has no payload_offset (2.08+): payload not examined", protocol>>8, protocol&0xff)
		return requireKernel(rep)
	}
	start := (setupSects+1)*512 + int64(binary.LittleEndian.Uint32(head[0x248:]))
	length := int64(binary.LittleEndian.Uint32(head[0x24c:]))
	if length < 16 || start > size || length > size-start {
		return fmt.Errorf("bzImage: payload (%d bytes at %d) outside the %d-byte file (truncated?): %w", length, start, size, errNotKernel)
	}
	magic, err := readAt(r, start, 16)
	if err != nil {
		return fmt.Errorf("bzImage: %w", err)
	}
	kind := sniffCompression(magic)
	if kind == "" {
		return fmt.Errorf("bzImage: payload starts with % x, no known compression: %w", magic[:4], errNotKernel)
	}
	rep.Compression = kind
	if in.headerOnly {
		rep.Note = "header only: payload not decompressed"
		return requireKernel(rep)
	}
	if kind == compLZO {
		rep.Note = "payload compression lzo is not supported by this build (no maintained Go LZO decoder)"
		return requireKernel(rep)
	}
	if length > in.limit {
		return fmt.Errorf("bzImage: %d-byte payload exceeds the %d-byte limit: %w", length, in.limit, ErrDecompressionBudget)
	}
	data, err := readAt(r, start, length)
	if err != nil {
		return fmt.Errorf("bzImage: %w", err)
	}
	stream, claimed := sizeAppended(kind, data)
	out, err := decompress(ctx, kind, stream, in.limit, claimed)
	if errors.Is(err, ErrUnsupportedCompression) {
		rep.Note = "payload not decompressed: " + err.Error()
		return requireKernel(rep)
	}
	if err != nil {
		return fmt.Errorf("bzImage payload: %w", err)
	}
	header := rep.Release
	if _, err := in.payload(ctx, out, rep); err != nil {
		return fmt.Errorf("bzImage payload: %w", err)
	}
	if header != "" && rep.Release != header {
		rep.Note = fmt.Sprintf("setup header says release %s, the kernel's banner %s", header, rep.Release)
	}
	return nil
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// zbootCompression maps the zboot header's COMP_TYPE
// (drivers/firmware/efi/libstub/Makefile.zboot) to our names.
func zbootCompression(t string) string {
	switch t {
	case "gzip":
		return compGzip
	case "lz4":
		return compLZ4
	case "lzma":
		return compLZMA
	case "lzo":
		return compLZO
	case "xzkern", "xz":
		return compXZ
	case "zstd22", "zstd":
		return compZstd
	case "bzip2":
		return compBzip2
	}
	return ""
}

// peMachines maps PE machine types of zboot images to architectures.
func peArch(m uint16) string {
	switch m {
	case 0xaa64:
		return "arm64"
	case 0x5064:
		return "riscv64"
	case 0x6264:
		return "loongarch64"
	case 0x8664:
		return "x86_64"
	}
	return ""
}

// zboot reads an EFI zboot image: header, PE machine, then the compressed
// kernel Image it carries.
func (in *inspector) zboot(ctx context.Context, r io.ReaderAt, size int64, head []byte, rep *verdict.Report) error {
	rep.Format = formatZboot
	if pe := int64(binary.LittleEndian.Uint32(head[0x3c:])); pe > 0 && pe+6 <= min(size, int64(len(head))) &&
		string(head[pe:pe+4]) == "PE\x00\x00" {
		rep.Arch = peArch(binary.LittleEndian.Uint16(head[pe+4:]))
	}
	compType := head[24:0x3c]
	if i := bytes.IndexByte(compType, 0); i >= 0 {
		compType = compType[:i]
	}
	kind := zbootCompression(string(compType))
	if kind == "" {
		rep.Compression = string(compType)
		return fmt.Errorf("zboot: compression type %q: %w", compType, ErrUnsupportedCompression)
	}
	rep.Compression = kind
	start := int64(binary.LittleEndian.Uint32(head[8:]))
	length := int64(binary.LittleEndian.Uint32(head[12:]))
	if length < 4 || start > size || length > size-start {
		return fmt.Errorf("zboot: payload (%d bytes at %d) outside the %d-byte file (truncated?): %w", length, start, size, errNotKernel)
	}
	if in.headerOnly {
		rep.Note = "header only: payload not decompressed"
		return nil
	}
	if kind == compLZO {
		return fmt.Errorf("zboot: payload compression lzo (no maintained Go LZO decoder): %w", ErrUnsupportedCompression)
	}
	if length > in.limit {
		return fmt.Errorf("zboot: %d-byte payload exceeds the %d-byte limit: %w", length, in.limit, ErrDecompressionBudget)
	}
	data, err := readAt(r, start, length)
	if err != nil {
		return fmt.Errorf("zboot: %w", err)
	}
	// The header's size excludes kbuild's appended size; for gzip the
	// trailer carries it.
	var hint int64
	if kind == compGzip {
		_, hint = sizeAppended(kind, data)
	} else if b, err := readAt(r, start+length, 4); err == nil {
		hint = int64(binary.LittleEndian.Uint32(b))
	}
	if sniffCompression(data) != kind {
		return fmt.Errorf("zboot: header says %s but the payload starts with % x: %w", kind, data[:4], errNotKernel)
	}
	out, err := decompress(ctx, kind, data, in.limit, min(hint, in.limit))
	if err != nil {
		return fmt.Errorf("zboot payload: %w", err)
	}
	if _, err := in.payload(ctx, out, rep); err != nil {
		return fmt.Errorf("zboot payload: %w", err)
	}
	return nil
}

// compressedFile reads a kernel compressed as a whole (Image.gz, vmlinux.xz).
func (in *inspector) compressedFile(ctx context.Context, r io.ReaderAt, size int64, kind string, rep *verdict.Report) error {
	rep.Compression = kind
	if in.headerOnly {
		rep.Format = formatRaw
		rep.Note = "header only: compressed image not decompressed"
		return nil
	}
	if size > in.limit {
		return fmt.Errorf("%d-byte %s file exceeds the %d-byte limit: %w", size, kind, in.limit, ErrDecompressionBudget)
	}
	data, err := readAt(r, 0, size)
	if err != nil {
		return err
	}
	var hint int64
	if kind == compGzip {
		_, hint = sizeAppended(kind, data)
	}
	out, err := decompress(ctx, kind, data, in.limit, min(hint, in.limit))
	if err != nil {
		return err
	}
	format, err := in.payload(ctx, out, rep)
	rep.Format = format
	return err
}
