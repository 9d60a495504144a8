package hooks

import (
	"context"

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
		return guestkernel.Inspect(ctx, path, guestkernel.Options{FixedReleases: opts.FixedReleases, CacheDir: opts.CacheDir})
	})
}
