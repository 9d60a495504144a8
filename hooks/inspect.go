package hooks

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
)

// InspectOptions are passed to an Inspector.
type InspectOptions struct {
	// FixedReleases are operator-vouched releases ([submount_guard]
	// fixed_releases).
	FixedReleases []string
	// CacheDir caches inspection results (state_dir/kernel-cache).
	CacheDir string
}

// Inspector inspects one guest kernel image.
type Inspector interface {
	Inspect(ctx context.Context, path string, opts InspectOptions) (*guestkernel.Report, error)
}

// InspectorFunc adapts a function to Inspector.
type InspectorFunc func(ctx context.Context, path string, opts InspectOptions) (*guestkernel.Report, error)

func (f InspectorFunc) Inspect(ctx context.Context, path string, opts InspectOptions) (*guestkernel.Report, error) {
	return f(ctx, path, opts)
}

// DefaultInspector is guestkernel.Inspect.
func DefaultInspector() Inspector {
	return InspectorFunc(func(ctx context.Context, path string, opts InspectOptions) (*guestkernel.Report, error) {
		// TODO(issue 3): call guestkernel.Inspect once that package lands;
		// until then every kernel is "unknown", never "fixed".
		return nil, fmt.Errorf("guest-kernel inspection is not available in this build: %w", errdefs.ErrNotImplemented)
	})
}
