// Package guestkernel tells, without booting it, whether a guest kernel image
// carries the FUSE submount fix (Linux c4d361f66ac9): it reads the image's
// format (ELF vmlinux, x86 bzImage, arm64 Image, EFI zboot, compressed
// images), its "Linux version" banner, release and upstream version, and the
// kernel's own BTF, then decides a verdict with the evidence that decided it.
// The report, the verdict and the cache of facts are package verdict's
// (callers name them there; nothing is re-exported here), which links none
// of the parsers and decompressors here, so that the shim can judge an image
// inspected before without linking them (their initialisation alone costs a
// start about half a millisecond).
//
// Layouts followed: the x86 boot protocol (Documentation/arch/x86/boot.rst,
// setup header at 0x1f1), the arm64 Image header (Documentation/arch/arm64/
// booting.rst), the EFI zboot header (drivers/firmware/efi/libstub/
// zboot-header.S), the BTF format (Documentation/bpf/btf.rst) and the .xz
// container format (tukaani.org/xz/xz-file-format.txt).
package guestkernel
