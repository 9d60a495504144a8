//go:build !(armbe || arm64be || m68k || mips || mips64 || mips64p32 || ppc || ppc64 || s390 || s390x || shbe || sparc || sparc64)

package vhostuser

// littleEndianHost is true: the rings' 16-bit indexes can be read and
// written through native 32-bit atomics.
const littleEndianHost = true
