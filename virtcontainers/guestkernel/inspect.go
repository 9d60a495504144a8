package guestkernel

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/errdefs"
)

// DefaultMaxDecompressed caps how many bytes a compressed kernel payload may
// expand to when Options.MaxDecompressed is zero.
const DefaultMaxDecompressed int64 = 256 << 20

// Options tune Inspect.
type Options struct {
	// FixedReleases are exact releases (`uname -r`) the operator knows to
	// carry the fix (config key fixed_releases). They outrank the version
	// string but not BTF.
	FixedReleases []string
	// CacheDir holds inspection results keyed by (device, inode, size,
	// mtime); "" disables the cache.
	CacheDir string
	// MaxDecompressed caps the decompressed size of a payload;
	// 0 means DefaultMaxDecompressed.
	MaxDecompressed int64
	// HeaderOnly stops at what headers tell (the bzImage setup header's
	// version string) and skips decompressing payloads, so compressed
	// images give no BTF evidence.
	HeaderOnly bool
}

// Inspect reads the kernel image at path and reports what it is and whether
// it carries the fix. On failure it still returns a Report (Verdict Unknown,
// Error set) together with an error wrapping errdefs.ErrNotFound (no such
// file) or errdefs.ErrInvalidArgument (not a readable kernel image).
func Inspect(ctx context.Context, path string, opts Options) (*Report, error) {
	err := fmt.Errorf("inspect %s: %w", path, errdefs.ErrNotImplemented)
	return &Report{Path: path, Verdict: Unknown, Evidence: EvidenceNone, Error: err.Error(),
		Reason: "kernel inspection is not implemented yet"}, err
}
