package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// A guest that never powers off is killed at its timeout and reported with
// its console, so a hung cell cannot stall the suite or hide why.
func TestHungGuestIsKilledAndReported(t *testing.T) {
	testutil.RequiresEnv(t, "KSG_E2E")
	env := harness.NewEnv(t)
	dir := t.TempDir()
	spec := harness.VM{
		QEMU: env.QEMU, Kernel: env.BzImage(harness.KernelFixed), Initrd: env.Initrd,
		Console: filepath.Join(dir, "console.log"), MemMB: guestMemMB, Timeout: 10 * time.Second,
		Append: []string{guest.KeyHang + "=1"},
	}
	start := time.Now()
	console, err := harness.Run(context.Background(), spec)
	require.Error(t, err)
	require.True(t, errors.Is(err, harness.ErrHung), "want harness.ErrHung, got %v", err)
	require.Contains(t, err.Error(), guest.HangLine, "the error must carry the console's tail")
	require.Contains(t, string(console), guest.HangLine)
	require.Less(t, time.Since(start), spec.Timeout+15*time.Second, "runVM must return soon after the timeout")
}
