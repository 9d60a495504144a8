package hooks

import (
	"context"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Inspector inspects one guest kernel image. The caller chooses how:
// kata-runtime passes guestkernel.Inspect (InspectorFunc(guestkernel.Inspect)),
// the shim its cache lookup with a fallback, so that this package links no
// image parser.
type Inspector interface {
	Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error)
}

// InspectorFunc adapts a function to Inspector.
type InspectorFunc func(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error)

func (f InspectorFunc) Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	return f(ctx, path, opts)
}
