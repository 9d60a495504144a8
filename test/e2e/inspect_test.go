package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// The inspector must classify the two kernels the matrix boots as what they
// did in the guest, from the image Kata would be configured with (bzImage)
// and from its vmlinux, by their BTF.
func TestGuestKernelsClassified(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	dir := testutil.GuestKernelsDir(t)
	releases := testutil.GuestKernelReleases(t, dir)
	cases := []struct {
		variant string
		file    string
		want    verdict.Verdict
	}{
		{harness.KernelVulnerable, "bzImage", verdict.Vulnerable},
		{harness.KernelVulnerable, "vmlinux", verdict.Vulnerable},
		{harness.KernelFixed, "bzImage", verdict.Fixed},
		{harness.KernelFixed, "vmlinux", verdict.Fixed},
	}
	for _, tc := range cases {
		t.Run(tc.variant+"/"+tc.file, func(t *testing.T) {
			rep, err := guestkernel.Inspect(context.Background(), filepath.Join(dir, tc.variant, tc.file), verdict.Options{})
			require.NoError(t, err)
			require.Equal(t, releases[tc.variant], rep.Release)
			require.Equal(t, tc.want, rep.Verdict, "reason: %s", rep.Reason)
			require.Equal(t, verdict.EvidenceBTF, rep.Evidence, "reason: %s", rep.Reason)
			require.True(t, rep.BTFHasFUSE, "the e2e kernels build FUSE in: their BTF must carry its types")
		})
	}
}
