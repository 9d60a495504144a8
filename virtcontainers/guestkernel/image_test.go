package guestkernel

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

var (
	shapeFixed = btfShape{fuse: true, fix: true, submounts: true}
	shapeVuln  = btfShape{fuse: true, submounts: true}
	shapeNoFS  = btfShape{}
)

func inspectBytes(t *testing.T, name string, b []byte, opts verdict.Options) (*verdict.Report, error) {
	t.Helper()
	return Inspect(context.Background(), writeTemp(t, name, b), opts)
}

func TestInspectELF(t *testing.T) {
	for _, arch := range elfArches {
		for _, tc := range []struct {
			name     string
			banner   string
			shape    *btfShape
			verdict  verdict.Verdict
			evidence verdict.Evidence
		}{
			{"btf fixed", bannerVuln61, &shapeFixed, verdict.Fixed, verdict.EvidenceBTF},
			{"btf vulnerable", bannerFixed61, &shapeVuln, verdict.Vulnerable, verdict.EvidenceBTF},
			{"btf without fuse", bannerFixed61, &shapeNoFS, verdict.Fixed, verdict.EvidenceVersion},
			{"no btf", bannerVuln61, nil, verdict.Vulnerable, verdict.EvidenceVersion},
		} {
			t.Run(arch.name+"/"+tc.name, func(t *testing.T) {
				var blob []byte
				if tc.shape != nil {
					blob = makeBTF(t, arch.order, *tc.shape)
				}
				rep, err := inspectBytes(t, "vmlinux", kernelELF(arch, tc.banner, blob), verdict.Options{})
				require.NoError(t, err)
				require.Equal(t, formatELF, rep.Format)
				require.Equal(t, arch.name, rep.Arch)
				require.Equal(t, compNone, rep.Compression)
				require.Equal(t, tc.banner, rep.Banner)
				require.Equal(t, releaseOf(tc.banner), rep.Release)
				require.Equal(t, tc.shape != nil, rep.BTFPresent)
				require.Equal(t, tc.verdict, rep.Verdict, rep.Reason)
				require.Equal(t, tc.evidence, rep.Evidence)
			})
		}
	}
}

// TestInspectBzImage: the payload is compressed with the real tools as
// kbuild does, inside a synthetic setup header.
func TestInspectBzImage(t *testing.T) {
	x86 := elfArches[0]
	vmlinux := kernelELF(x86, bannerFixed61, makeBTF(t, binary.LittleEndian, shapeVuln))
	header := "6.1.76 (ksg@build) #1 SMP PREEMPT_DYNAMIC Mon Jan  1 00:00:00 UTC 2024"
	for _, kind := range []string{compGzip, compBzip2, compLZMA, compXZ, compLZ4, compZstd} {
		t.Run(kind, func(t *testing.T) {
			payload := kbuildCompress(t, kind, vmlinux)
			if kind != compGzip {
				payload = withSize(payload, len(vmlinux))
			}
			img := makeBzImage(header, payload)
			rep, err := inspectBytes(t, "bzImage", img, verdict.Options{})
			require.NoError(t, err)
			require.Equal(t, formatBzImage, rep.Format)
			require.Equal(t, "x86_64", rep.Arch)
			require.Equal(t, kind, rep.Compression)
			require.Equal(t, bannerFixed61, rep.Banner, "banner comes from the decompressed kernel")
			require.True(t, rep.BTFPresent)
			require.Equal(t, verdict.Vulnerable, rep.Verdict, "BTF in the payload outranks the fixed version")
			require.Equal(t, verdict.EvidenceBTF, rep.Evidence)

			head, err := inspectBytes(t, "bzImage", img, verdict.Options{HeaderOnly: true})
			require.NoError(t, err)
			require.Equal(t, header, head.Banner, "header only: the setup header's string")
			require.Equal(t, "6.1.76", head.Release)
			require.False(t, head.BTFPresent)
			require.Equal(t, verdict.Fixed, head.Verdict, "header only cannot see the BTF")
			require.Equal(t, verdict.EvidenceVersion, head.Evidence)
			require.Contains(t, head.Reason, "BTF not examined")
		})
	}
	t.Run("lzo is reported, not guessed", func(t *testing.T) {
		payload := withSize(kbuildCompress(t, compLZO, vmlinux), len(vmlinux))
		rep, err := inspectBytes(t, "bzImage", makeBzImage(header, payload), verdict.Options{})
		require.NoError(t, err, "the version in the setup header still classifies it")
		require.Equal(t, compLZO, rep.Compression)
		require.Contains(t, rep.Note, "lzo is not supported")
		require.False(t, rep.BTFPresent)
		require.Equal(t, verdict.Fixed, rep.Verdict)
		require.Equal(t, verdict.EvidenceVersion, rep.Evidence)
		require.Contains(t, rep.Reason, "lzo")
	})
	t.Run("budget", func(t *testing.T) {
		payload := kbuildCompress(t, compGzip, vmlinux)
		rep, err := inspectBytes(t, "bzImage", makeBzImage(header, payload), verdict.Options{MaxDecompressed: int64(len(vmlinux) / 2)})
		require.ErrorIs(t, err, ErrDecompressionBudget)
		require.True(t, errdefs.IsInvalidArgument(err))
		require.Equal(t, verdict.Unknown, rep.Verdict)
		require.Contains(t, rep.Error, "bzImage payload")
		require.Contains(t, rep.Reason, "decompression budget")
	})
	t.Run("old boot protocol", func(t *testing.T) {
		img := makeBzImage(header, kbuildCompress(t, compGzip, vmlinux))
		binary.LittleEndian.PutUint16(img[0x206:], 0x0206)
		rep, err := inspectBytes(t, "bzImage", img, verdict.Options{})
		require.NoError(t, err)
		require.Contains(t, rep.Note, "boot protocol 2.06")
		require.Equal(t, "x86", rep.Arch)
		require.Equal(t, verdict.Fixed, rep.Verdict)
	})
}

func TestInspectArm64(t *testing.T) {
	body := append([]byte("\x00code\x00"), bannerVuln61+"\n\x00"...)
	body = append(body, make([]byte, 4096)...)
	body = append(body, makeBTF(t, binary.LittleEndian, shapeFixed)...)
	body = append(body, "trailing data"...)
	image := makeArm64Image(body)

	t.Run("Image", func(t *testing.T) {
		rep, err := inspectBytes(t, "Image", image, verdict.Options{})
		require.NoError(t, err)
		require.Equal(t, formatArm64, rep.Format)
		require.Equal(t, "arm64", rep.Arch)
		require.Equal(t, compNone, rep.Compression)
		require.Equal(t, "6.1.69", rep.Release)
		require.True(t, rep.BTFHasFix)
		require.Equal(t, verdict.Fixed, rep.Verdict)
		require.Equal(t, verdict.EvidenceBTF, rep.Evidence)
	})
	t.Run("Image.gz", func(t *testing.T) {
		rep, err := inspectBytes(t, "Image.gz", kbuildCompress(t, compGzip, image), verdict.Options{})
		require.NoError(t, err)
		require.Equal(t, formatArm64, rep.Format)
		require.Equal(t, compGzip, rep.Compression)
		require.Equal(t, verdict.Fixed, rep.Verdict)
		require.Equal(t, verdict.EvidenceBTF, rep.Evidence)
	})
	t.Run("big-endian BTF", func(t *testing.T) {
		be := append([]byte("\x00"), bannerFixed61+"\n\x00"...)
		be = append(be, makeBTF(t, binary.BigEndian, shapeVuln)...)
		img := makeArm64Image(be)
		binary.LittleEndian.PutUint64(img[24:], 3) // big-endian kernel
		rep, err := inspectBytes(t, "Image", img, verdict.Options{})
		require.NoError(t, err)
		require.Equal(t, verdict.Vulnerable, rep.Verdict)
		require.Equal(t, verdict.EvidenceBTF, rep.Evidence)
	})
	for _, tc := range []struct{ compType, kind string }{
		{"gzip", compGzip}, {"zstd22", compZstd}, {"xzkern", compXZ}, {"lz4", compLZ4}, {"lzma", compLZMA},
	} {
		t.Run("zboot "+tc.compType, func(t *testing.T) {
			payload := kbuildCompress(t, tc.kind, image)
			rep, err := inspectBytes(t, "vmlinuz.efi", makeZboot(tc.compType, 0xaa64, payload), verdict.Options{})
			require.NoError(t, err)
			require.Equal(t, formatZboot, rep.Format)
			require.Equal(t, tc.kind, rep.Compression)
			require.Equal(t, "arm64", rep.Arch)
			require.Equal(t, "6.1.69", rep.Release)
			require.Equal(t, verdict.Fixed, rep.Verdict)
			require.Equal(t, verdict.EvidenceBTF, rep.Evidence)
		})
	}
	t.Run("zboot lzo", func(t *testing.T) {
		rep, err := inspectBytes(t, "vmlinuz.efi", makeZboot("lzo", 0xaa64, kbuildCompress(t, compLZO, image)), verdict.Options{})
		require.ErrorIs(t, err, ErrUnsupportedCompression)
		require.True(t, errdefs.IsNotImplemented(err))
		require.Equal(t, compLZO, rep.Compression)
		require.Equal(t, "arm64", rep.Arch)
		require.Equal(t, verdict.Unknown, rep.Verdict)
		require.Contains(t, rep.Reason, "cannot decompress")
	})
	t.Run("zboot type mismatch", func(t *testing.T) {
		_, err := inspectBytes(t, "vmlinuz.efi", makeZboot("zstd22", 0xaa64, kbuildCompress(t, compGzip, image)), verdict.Options{})
		require.True(t, errdefs.IsInvalidArgument(err), "%v", err)
		require.ErrorContains(t, err, "header says zstd")
	})
	t.Run("zboot unknown type", func(t *testing.T) {
		_, err := inspectBytes(t, "vmlinuz.efi", makeZboot("brotli", 0xaa64, []byte("whatever payload")), verdict.Options{})
		require.ErrorIs(t, err, ErrUnsupportedCompression)
	})
}

func TestInspectCompressedELF(t *testing.T) {
	vmlinux := kernelELF(elfArches[2], bannerVuln61, nil)
	rep, err := inspectBytes(t, "vmlinux.xz", runFilter(t, vmlinux, "xz", "-1"), verdict.Options{})
	require.NoError(t, err)
	require.Equal(t, formatELF, rep.Format)
	require.Equal(t, compXZ, rep.Compression)
	require.Equal(t, "s390x", rep.Arch)
	require.Equal(t, verdict.Vulnerable, rep.Verdict)
}
