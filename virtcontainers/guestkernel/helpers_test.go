package guestkernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// Builders of synthetic images that follow the documented layouts, used by
// unit and fuzz tests. Real images are tested in real_test.go.

const (
	bannerFixed61 = "Linux version 6.1.76 (ksg@build) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Mon Jan  1 00:00:00 UTC 2024"
	bannerVuln61  = "Linux version 6.1.69 (ksg@build) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Mon Jan  1 00:00:00 UTC 2024"
	bannerDebian  = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"
)

// btfShape says which FUSE types a synthetic BTF defines.
type btfShape struct {
	fuse, fix, submounts bool
}

// makeBTF builds kernel-like BTF with cilium/ebpf's encoder.
func makeBTF(t testing.TB, order binary.ByteOrder, shape btfShape) []byte {
	t.Helper()
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	types := []btf.Type{
		&btf.Struct{Name: "task_struct", Size: 8, Members: []btf.Member{{Name: "pid", Type: u32}, {Name: "tgid", Type: u32, Offset: 32}}},
		&btf.Func{Name: "fuse_inode_eviction_helper", Type: &btf.FuncProto{Return: u32}, Linkage: btf.GlobalFunc},
	}
	if shape.fuse {
		conn := &btf.Struct{Name: "fuse_conn", Size: 8, Members: []btf.Member{{Name: "max_read", Type: u32}}}
		if shape.submounts {
			conn.Members = append(conn.Members, btf.Member{Name: "auto_submounts", Type: u32, Offset: 32, BitfieldSize: 1})
		}
		inode := &btf.Struct{Name: "fuse_inode", Size: 8, Members: []btf.Member{{Name: "nodeid", Type: u32}}}
		if shape.fix {
			lookup := &btf.Struct{Name: "fuse_submount_lookup", Size: 8, Members: []btf.Member{{Name: "nodeid", Type: u32}, {Name: "count", Type: u32, Offset: 32}}}
			inode.Members = append(inode.Members, btf.Member{Name: "submount_lookup", Type: &btf.Pointer{Target: lookup}, Offset: 32})
			types = append(types, lookup)
		}
		types = append(types, conn, inode)
	} else {
		// A forward declaration and a member named like the fix must not count.
		types = append(types, &btf.Fwd{Name: "fuse_inode", Kind: btf.FwdStruct},
			&btf.Struct{Name: "other", Size: 4, Members: []btf.Member{{Name: "fuse_submount_lookup", Type: u32}}})
	}
	b, err := btf.NewBuilder(types, nil)
	require.NoError(t, err)
	blob, err := b.Marshal(nil, &btf.MarshalOptions{Order: order})
	require.NoError(t, err)
	return blob
}

// elfArchSpec is what an ELF header says about the machine.
type elfArchSpec struct {
	name    string
	machine elf.Machine
	order   binary.ByteOrder
}

var elfArches = []elfArchSpec{
	{"x86_64", elf.EM_X86_64, binary.LittleEndian},
	{"arm64", elf.EM_AARCH64, binary.LittleEndian},
	{"s390x", elf.EM_S390, binary.BigEndian},
	{"ppc64le", elf.EM_PPC64, binary.LittleEndian},
}

type elfSection struct {
	name  string
	flags elf.SectionFlag
	data  []byte
}

// makeELF writes a 64-bit ELF executable with the given PROGBITS sections
// plus .shstrtab, laid out one after another after the ELF header.
func makeELF(arch elfArchSpec, sections []elfSection) []byte {
	o := arch.order
	var shstr bytes.Buffer
	shstr.WriteByte(0)
	nameOff := make([]uint32, len(sections)+1)
	for i, s := range sections {
		nameOff[i] = uint32(shstr.Len())
		shstr.WriteString(s.name + "\x00")
	}
	nameOff[len(sections)] = uint32(shstr.Len())
	shstr.WriteString(".shstrtab\x00")

	var body bytes.Buffer
	body.Write(make([]byte, 64)) // ELF header, filled below
	offs := make([]uint64, len(sections)+1)
	for i, s := range sections {
		for body.Len()%8 != 0 {
			body.WriteByte(0)
		}
		offs[i] = uint64(body.Len())
		body.Write(s.data)
	}
	offs[len(sections)] = uint64(body.Len())
	body.Write(shstr.Bytes())
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	shoff := uint64(body.Len())

	sh := func(name uint32, typ elf.SectionType, flags elf.SectionFlag, off, size uint64) {
		var h [64]byte
		o.PutUint32(h[0:], name)
		o.PutUint32(h[4:], uint32(typ))
		o.PutUint64(h[8:], uint64(flags))
		o.PutUint64(h[24:], off)
		o.PutUint64(h[32:], size)
		o.PutUint64(h[48:], 1)
		body.Write(h[:])
	}
	sh(0, elf.SHT_NULL, 0, 0, 0)
	for i, s := range sections {
		sh(nameOff[i], elf.SHT_PROGBITS, s.flags, offs[i], uint64(len(s.data)))
	}
	sh(nameOff[len(sections)], elf.SHT_STRTAB, 0, offs[len(sections)], uint64(shstr.Len()))

	b := body.Bytes()
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	b[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	if o == binary.BigEndian {
		b[elf.EI_DATA] = byte(elf.ELFDATA2MSB)
	}
	b[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	o.PutUint16(b[16:], uint16(elf.ET_EXEC))
	o.PutUint16(b[18:], uint16(arch.machine))
	o.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	o.PutUint64(b[40:], shoff)
	o.PutUint16(b[52:], 64) // ehsize
	o.PutUint16(b[58:], 64) // shentsize
	o.PutUint16(b[60:], uint16(len(sections)+2))
	o.PutUint16(b[62:], uint16(len(sections)+1)) // shstrndx
	return b
}

// kernelELF is a vmlinux-like ELF: code, .rodata with the banner among other
// strings, and .BTF when btfBlob is not nil.
func kernelELF(arch elfArchSpec, banner string, btfBlob []byte) []byte {
	rodata := []byte("\x00<6>%s version %s (%s)\n\x00Linux version %s\n\x00")
	rodata = append(rodata, banner+"\n\x00"...)
	rodata = append(rodata, bytes.Repeat([]byte("other read-only data "), 8)...)
	sections := []elfSection{
		{".text", elf.SHF_ALLOC | elf.SHF_EXECINSTR, bytes.Repeat([]byte{0x90, 0xe8, 0, 0, 0, 0, 0xc3}, 64)},
		{".rodata", elf.SHF_ALLOC, rodata},
	}
	if btfBlob != nil {
		sections = append(sections, elfSection{".BTF", elf.SHF_ALLOC, btfBlob})
	}
	return makeELF(arch, sections)
}

// makeBzImage lays out an x86 bzImage: one setup sector after the boot
// sector, the version string the setup header points at, then protected-mode
// code with the payload at payload_offset.
func makeBzImage(headerVersion string, payload []byte) []byte {
	const setupSects = 1
	pm := (setupSects + 1) * 512
	const payloadOffset = 64
	b := make([]byte, pm+payloadOffset, pm+payloadOffset+len(payload))
	b[0x1f1] = setupSects
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(b[0x20e:], 0x100) // string at 0x300
	copy(b[0x300:], headerVersion+"\x00")
	binary.LittleEndian.PutUint16(b[0x236:], 1) // XLF_KERNEL_64
	binary.LittleEndian.PutUint32(b[0x248:], payloadOffset)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	return append(b, payload...)
}

// makeZboot lays out an EFI zboot image (zboot-header.S): "MZ", "zimg",
// payload offset and size, the compression type, and a PE header naming
// the machine.
func makeZboot(compType string, machine uint16, payload []byte) []byte {
	const payloadOffset = 0x200
	b := make([]byte, payloadOffset, payloadOffset+len(payload)+4)
	copy(b, "MZ\x00\x00zimg")
	binary.LittleEndian.PutUint32(b[8:], payloadOffset)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(payload)))
	copy(b[24:], compType+"\x00")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x44:], machine)
	return append(b, payload...)
}

// makeArm64Image puts the 64-byte arm64 Image header before body.
func makeArm64Image(body []byte) []byte {
	h := make([]byte, 64, 64+len(body))
	copy(h, "MZ")
	binary.LittleEndian.PutUint64(h[16:], uint64(64+len(body)))
	binary.LittleEndian.PutUint64(h[24:], 2) // little-endian, 4K pages
	copy(h[0x38:], "ARM\x64")
	return append(h, body...)
}

// kbuildCompress compresses data with the system tool exactly as kbuild's
// cmd_<kind> does (scripts/Makefile.lib, scripts/xz_wrap.sh for x86).
func kbuildCompress(t testing.TB, kind string, data []byte) []byte {
	t.Helper()
	var argv []string
	switch kind {
	case compGzip:
		argv = []string{"gzip", "-n", "-f", "-9"}
	case compBzip2:
		argv = []string{"bzip2", "-9"}
	case compLZMA:
		argv = []string{"lzma", "-9"}
	case compXZ:
		argv = []string{"xz", "--check=crc32", "--x86", "--lzma2=,dict=32MiB"}
	case compLZO:
		argv = []string{"lzop", "-9"}
	case compLZ4:
		argv = []string{"lz4", "-l", "-9", "-", "-"}
	case compZstd:
		argv = []string{"zstd", "-22", "--ultra"}
	default:
		t.Fatalf("no tool for %s", kind)
	}
	return runFilter(t, data, argv...)
}

// runFilter pipes data through a command.
func runFilter(t testing.TB, data []byte, argv ...string) []byte {
	t.Helper()
	testutil.RequiresCommand(t, argv[0])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	require.NoError(t, cmd.Run(), "%v: %s", argv, stderr.String())
	return out.Bytes()
}

// withSize appends the uncompressed size as kbuild's size_append does.
func withSize(compressed []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), compressed...), uint32(size))
}

// writeTemp writes b to a file in a test directory and returns its path.
func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}
