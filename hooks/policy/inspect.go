package policy

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

// InspectorError is what an Inspector returns, without a report, when it
// cannot inspect at all: the program it runs is missing, cannot be run,
// crashes or answers what no inspector of this build would. That is an
// installation error, not a fact about the image, so Decide fails with it
// rather than judge the kernel unknown and let on_unknown apply. Its message
// is Err's, which says what is missing, where it was looked for and what to
// install. An image that cannot be read is not one: the inspector reports
// it (verdict unknown) with its error.
type InspectorError struct{ Err error }

func (e *InspectorError) Error() string { return e.Err.Error() }
func (e *InspectorError) Unwrap() error { return e.Err }

// InspectorFunc adapts a function to Inspector.
type InspectorFunc func(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error)

func (f InspectorFunc) Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	return f(ctx, path, opts)
}
