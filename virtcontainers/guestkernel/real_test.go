package guestkernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Real images: Debian's kernels (test/setup/40-debian-kernel.sh) and our
// tinyconfig builds (test/kernels/build.sh). Skipped when missing, failed
// under CI.

type realCase struct {
	name        string
	rel         string // under KSG_CACHE
	format      string
	arch        string
	compression string
	release     string // prefix
	btf         bool
	btfFUSE     bool
	verdict     verdict.Verdict
	evidence    verdict.Evidence
	opts        verdict.Options
}

func checkReal(t *testing.T, path string, tc realCase) *verdict.Report {
	t.Helper()
	rep, err := Inspect(context.Background(), path, tc.opts)
	require.NoError(t, err)
	require.Equal(t, tc.format, rep.Format)
	require.Equal(t, tc.arch, rep.Arch)
	require.Equal(t, tc.compression, rep.Compression)
	require.True(t, strings.HasPrefix(rep.Release, tc.release), "release %q", rep.Release)
	require.True(t, strings.HasPrefix(rep.Banner, "Linux version "+rep.Release+" ") || tc.opts.HeaderOnly, "banner %q", rep.Banner)
	require.Equal(t, tc.btf, rep.BTFPresent, "btf_present; note %q", rep.Note)
	require.Equal(t, tc.btfFUSE, rep.BTFHasFUSE)
	require.Equal(t, tc.verdict, rep.Verdict, rep.Reason)
	require.Equal(t, tc.evidence, rep.Evidence, rep.Reason)
	return rep
}

func TestRealDebianKernels(t *testing.T) {
	for _, tc := range []realCase{
		{name: "bookworm cloud bzImage (lz4, FUSE module)", rel: "bookworm-cloud-amd64/vmlinuz", format: formatBzImage, arch: "x86_64",
			compression: compLZ4, release: "6.1.0-", btf: true, verdict: verdict.Fixed, evidence: verdict.EvidenceVersion},
		{name: "bookworm cloud bzImage header only", rel: "bookworm-cloud-amd64/vmlinuz", format: formatBzImage, arch: "x86_64",
			compression: compLZ4, release: "6.1.0-", verdict: verdict.Fixed, evidence: verdict.EvidenceVersion, opts: verdict.Options{HeaderOnly: true}},
		{name: "bullseye cloud bzImage (5.10, never fixed)", rel: "bullseye-cloud-amd64/vmlinuz", format: formatBzImage, arch: "x86_64",
			compression: compLZ4, release: "5.10.0-", btf: true, verdict: verdict.Vulnerable, evidence: verdict.EvidenceVersion},
		{name: "trixie cloud bzImage (zstd, FUSE built in)", rel: "trixie-cloud-amd64/vmlinuz", format: formatBzImage, arch: "x86_64",
			compression: compZstd, release: "6.12.", btf: true, btfFUSE: true, verdict: verdict.Fixed, evidence: verdict.EvidenceBTF},
		{name: "trixie arm64 Image", rel: "trixie-arm64/vmlinuz", format: formatArm64, arch: "arm64",
			compression: compNone, release: "6.12.", btf: true, btfFUSE: true, verdict: verdict.Fixed, evidence: verdict.EvidenceBTF},
		{name: "trixie arm64 Image.gz", rel: "trixie-arm64/Image.gz", format: formatArm64, arch: "arm64",
			compression: compGzip, release: "6.12.", btf: true, btfFUSE: true, verdict: verdict.Fixed, evidence: verdict.EvidenceBTF},
		// Debian's ppc64el kernel has no BTF (CONFIG_DEBUG_INFO_BTF off).
		{name: "bookworm ppc64el ELF vmlinux", rel: "bookworm-ppc64el/vmlinux", format: formatELF, arch: "ppc64le",
			compression: compNone, release: "6.1.0-", verdict: verdict.Fixed, evidence: verdict.EvidenceVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testutil.RequiresCacheFile(t, filepath.Join("debian-kernels", tc.rel))
			rep := checkReal(t, p, tc)
			if tc.release == "6.1.0-" || tc.release == "5.10.0-" {
				require.True(t, strings.HasPrefix(rep.DistroTail, "Debian "), "the version comes from the Debian tail: %q", rep.DistroTail)
			}
		})
	}
	t.Run("zboot around the real arm64 Image.gz", func(t *testing.T) {
		// Debian builds no EFI zboot image: wrap the real compressed Image
		// in the header layout of zboot-header.S.
		gz, err := os.ReadFile(testutil.RequiresCacheFile(t, "debian-kernels/trixie-arm64/Image.gz"))
		require.NoError(t, err)
		p := writeTemp(t, "vmlinuz.efi", makeZboot("gzip", 0xaa64, gz))
		checkReal(t, p, realCase{format: formatZboot, arch: "arm64", compression: compGzip, release: "6.12.",
			btf: true, btfFUSE: true, verdict: verdict.Fixed, evidence: verdict.EvidenceBTF})
	})
	t.Run("fixed_releases cannot beat BTF", func(t *testing.T) {
		p := testutil.RequiresCacheFile(t, "debian-kernels/trixie-cloud-amd64/vmlinuz")
		rep, err := Inspect(context.Background(), p, verdict.Options{FixedReleases: []string{"x"}})
		require.NoError(t, err)
		require.Equal(t, verdict.EvidenceBTF, rep.Evidence)
	})
}

// TestRealTinyconfigKernels asserts verdicts on our builds, including images
// whose version lies in both directions: BTF must win.
func TestRealTinyconfigKernels(t *testing.T) {
	dir := testutil.GuestKernelsDir(t)
	releases := testutil.GuestKernelReleases(t, dir)
	for _, tc := range []struct {
		variant, file string
		btf           bool
		verdict       verdict.Verdict
		evidence      verdict.Evidence
		versionSays   verdict.Verdict
	}{
		{"fixed", "vmlinux", true, verdict.Fixed, verdict.EvidenceBTF, verdict.Fixed},
		{"fixed", "bzImage", true, verdict.Fixed, verdict.EvidenceBTF, verdict.Fixed},
		{"vulnerable", "vmlinux", true, verdict.Vulnerable, verdict.EvidenceBTF, verdict.Vulnerable},
		{"vulnerable", "bzImage", true, verdict.Vulnerable, verdict.EvidenceBTF, verdict.Vulnerable},
		{"lying-fixed", "vmlinux", true, verdict.Vulnerable, verdict.EvidenceBTF, verdict.Fixed},
		{"lying-fixed", "bzImage", true, verdict.Vulnerable, verdict.EvidenceBTF, verdict.Fixed},
		{"lying-vulnerable", "vmlinux", true, verdict.Fixed, verdict.EvidenceBTF, verdict.Vulnerable},
		{"lying-vulnerable", "bzImage", true, verdict.Fixed, verdict.EvidenceBTF, verdict.Vulnerable},
		{"fixed-nobtf", "vmlinux", false, verdict.Fixed, verdict.EvidenceVersion, verdict.Fixed},
		{"vulnerable-nobtf", "vmlinux", false, verdict.Vulnerable, verdict.EvidenceVersion, verdict.Vulnerable},
	} {
		t.Run(tc.variant+"/"+tc.file, func(t *testing.T) {
			p := filepath.Join(dir, tc.variant, tc.file)
			rep, err := Inspect(context.Background(), p, verdict.Options{})
			require.NoError(t, err)
			require.Equal(t, releases[tc.variant], rep.Release)
			require.Equal(t, "x86_64", rep.Arch)
			require.Equal(t, tc.btf, rep.BTFPresent)
			require.Equal(t, tc.btf, rep.BTFHasFUSE, "FUSE is built into our kernels")
			require.Equal(t, tc.verdict, rep.Verdict, rep.Reason)
			require.Equal(t, tc.evidence, rep.Evidence, rep.Reason)
			byVersion := &verdict.Report{Release: rep.Release, Banner: rep.Banner}
			verdict.Judge(byVersion, nil)
			require.Equal(t, tc.versionSays, byVersion.Verdict, "what the version alone says")
			if tc.file == "bzImage" {
				require.Equal(t, formatBzImage, rep.Format)
				require.NotEqual(t, compNone, rep.Compression)
			} else {
				require.Equal(t, formatELF, rep.Format)
			}
		})
	}
	t.Run("header only cannot see the lie", func(t *testing.T) {
		// Why Inspect reads payloads by default: the setup header alone
		// trusts the lying version.
		rep, err := Inspect(context.Background(), filepath.Join(dir, "lying-fixed", "bzImage"), verdict.Options{HeaderOnly: true})
		require.NoError(t, err)
		require.Equal(t, verdict.Fixed, rep.Verdict)
		require.Equal(t, verdict.EvidenceVersion, rep.Evidence)
		require.Contains(t, rep.Reason, "BTF not examined")
	})
}
