package guestkernel

import "encoding/binary"

// BCJ filters rewrite the relative targets of branch instructions into
// absolute ones before compression, so that repeated calls to one function
// compress well. These undo them, in place, for a whole block whose first
// byte sits at stream position start.

// unBCJX86 undoes the x86 filter. The encoder converted the 32-bit operand
// of an E8 (call) or E9 (jmp) byte when its top byte was 0x00 or 0xFF and the
// bytes just before did not look like a converted operand themselves;
// prevMask remembers which of the last few positions held E8/E9 bytes.
func unBCJX86(b []byte, start uint32) {
	// Indexed by (prevMask>>1)&7: whether a conversion is allowed, and how
	// many operand bytes to look back into.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNumber := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	isMSByte := func(x byte) bool { return x == 0x00 || x == 0xff }

	var prevMask uint32
	prevPos := start - 5
	for i := 0; i+5 <= len(b); {
		if b[i] != 0xe8 && b[i] != 0xe9 {
			i++
			continue
		}
		pos := start + uint32(i)
		if d := pos - prevPos; d > 5 {
			prevMask = 0
		} else {
			for range d {
				prevMask = (prevMask & 0x77) << 1
			}
		}
		prevPos = pos
		top := b[i+4]
		if isMSByte(top) && allowed[(prevMask>>1)&7] && prevMask>>1 < 0x10 {
			src := binary.LittleEndian.Uint32(b[i+1:])
			var dest uint32
			for {
				dest = src - (pos + 5)
				if prevMask == 0 {
					break
				}
				shift := 24 - bitNumber[prevMask>>1]*8
				if !isMSByte(byte(dest >> shift)) {
					break
				}
				src = dest ^ (1<<(32-bitNumber[prevMask>>1]*8) - 1)
			}
			// Sign-extend bit 24 into the top byte.
			dest &= 0x01ffffff
			if dest&0x01000000 != 0 {
				dest |= 0xff000000
			}
			binary.LittleEndian.PutUint32(b[i+1:], dest)
			i += 5
			prevMask = 0
			continue
		}
		i++
		prevMask |= 1
		if isMSByte(top) {
			prevMask |= 0x10
		}
	}
}

// unBCJARM64 undoes the ARM64 filter: BL immediates (26 bits, in words) and
// ADRP immediates (21 bits, in pages, within ±512 MiB) were made absolute.
func unBCJARM64(b []byte, start uint32) {
	for i := 0; i+4 <= len(b); i += 4 {
		pc := start + uint32(i)
		insn := binary.LittleEndian.Uint32(b[i:])
		switch {
		case insn>>26 == 0x25: // BL
			imm := (insn - pc>>2) & 0x03ffffff
			binary.LittleEndian.PutUint32(b[i:], 0x94000000|imm)
		case insn&0x9f000000 == 0x90000000: // ADRP
			src := (insn>>29)&3 | (insn>>3)&0x001ffffc
			if (src+0x00020000)&0x001c0000 != 0 {
				continue
			}
			dest := src - pc>>12
			insn &= 0x9000001f
			insn |= (dest & 3) << 29
			insn |= (dest & 0x0003fffc) << 3
			insn |= (0 - (dest & 0x00020000)) & 0x00e00000
			binary.LittleEndian.PutUint32(b[i:], insn)
		}
	}
}
