package guestkernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// classed gives an error an errdefs class without changing its message.
type classed struct {
	class error
	err   error
}

func (e *classed) Error() string   { return e.err.Error() }
func (e *classed) Unwrap() []error { return []error{e.err, e.class} }

func withClass(class, err error) error { return &classed{class: class, err: err} }

// Inspect reads the kernel image at path and reports what it is and whether
// it carries the FUSE submount fix. On failure it still returns a Report
// (facts found so far, Verdict Unknown, Error and Reason set) and an error
// wrapping errdefs.ErrNotFound (no such file), errdefs.ErrPermissionDenied,
// errdefs.ErrNotImplemented (a compression this build cannot read, wrapping
// ErrUnsupportedCompression) or errdefs.ErrInvalidArgument (anything else
// that is not a readable kernel image; ErrDecompressionBudget when a payload
// expands too far).
func Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	rep, cached, err := inspectPath(ctx, path, opts)
	if err != nil {
		rep.Path = path
		rep.Verdict, rep.Evidence = verdict.Unknown, verdict.EvidenceNone
		rep.Error = err.Error()
		rep.Reason = errorReason(err)
		log.G(ctx).WithError(err).WithField("path", path).Debug("guest kernel inspection failed")
		return rep, err
	}
	rep.Path = path
	verdict.Judge(rep, opts.FixedReleases)
	// Checked first: building the fields costs more than a cache hit.
	if l := log.G(ctx); l.Logger.IsLevelEnabled(log.DebugLevel) {
		l.WithFields(log.Fields{
			"path": path, "verdict": rep.Verdict, "evidence": rep.Evidence, "cached": cached,
		}).Debug("inspected guest kernel")
	}
	return rep, nil
}

func inspectPath(ctx context.Context, path string, opts verdict.Options) (rep *verdict.Report, cached bool, err error) {
	rep = &verdict.Report{}
	st, err := os.Stat(path)
	if err != nil {
		return rep, false, openError(path, err)
	}
	if err := checkRegular(path, st); err != nil {
		return rep, false, err
	}
	cache := verdict.Cache{Dir: opts.CacheDir}
	key := verdict.KeyOf(st, opts)
	if facts, ok := cache.Load(ctx, key); ok {
		return facts, true, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return rep, false, openError(path, err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return rep, false, openError(path, err)
	}
	if err := checkRegular(path, st); err != nil {
		return rep, false, err
	}
	if err := parse(ctx, f, st.Size(), opts, rep); err != nil {
		return rep, false, fmt.Errorf("inspect %s: %w", path, err)
	}
	// Cache only what was read from a file that did not change meanwhile.
	if after, err := f.Stat(); err == nil && verdict.KeyOf(after, opts) == verdict.KeyOf(st, opts) {
		cache.Store(ctx, verdict.KeyOf(st, opts), rep)
	}
	return rep, false, nil
}

// parse runs the inspector over r, turning parser panics on hostile bytes
// into errors and giving every error its errdefs class.
func parse(ctx context.Context, r io.ReaderAt, size int64, opts verdict.Options, rep *verdict.Report) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = withClass(errdefs.ErrInvalidArgument, fmt.Errorf("malformed image (parser panic: %v)", p))
		}
	}()
	in := &inspector{limit: opts.Limit(), headerOnly: opts.HeaderOnly}
	if err := in.inspect(ctx, r, size, rep); err != nil {
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return err
		case errors.Is(err, ErrUnsupportedCompression):
			return withClass(errdefs.ErrNotImplemented, err)
		default:
			return withClass(errdefs.ErrInvalidArgument, err)
		}
	}
	return nil
}

func checkRegular(path string, st fs.FileInfo) error {
	switch {
	case st.IsDir():
		return withClass(errdefs.ErrInvalidArgument, fmt.Errorf("inspect %s: is a directory, not a kernel image", path))
	case !st.Mode().IsRegular():
		return withClass(errdefs.ErrInvalidArgument, fmt.Errorf("inspect %s: not a regular file (%s)", path, st.Mode().Type()))
	case st.Size() == 0:
		return withClass(errdefs.ErrInvalidArgument, fmt.Errorf("inspect %s: empty file: %w", path, errNotKernel))
	}
	return nil
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return withClass(errdefs.ErrNotFound, fmt.Errorf("inspect %s: no such file", path))
	case errors.Is(err, fs.ErrPermission):
		return withClass(errdefs.ErrPermissionDenied, fmt.Errorf("inspect %s: permission denied", path))
	}
	return withClass(errdefs.ErrInvalidArgument, fmt.Errorf("inspect: %w", err))
}

// errorReason is the one line telling a person what to do about err.
func errorReason(err error) string {
	switch {
	case errdefs.IsNotFound(err):
		return "the kernel image does not exist; fix the path (the hypervisor's `kernel` in the Kata configuration)"
	case errdefs.IsPermissionDenied(err):
		return "the kernel image is not readable; run as root or make it readable"
	case errors.Is(err, ErrDecompressionBudget):
		return "the payload expands beyond the decompression budget; a Linux kernel image does not, so check the file"
	case errdefs.IsNotImplemented(err):
		return "this build cannot decompress the image; use a kernel compressed with gzip, xz, zstd, lz4, bzip2 or lzma, or an uncompressed vmlinux"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "inspection was interrupted; retry"
	}
	return "the file is not a readable Linux kernel image (ELF vmlinux, x86 bzImage, arm64 Image, EFI zboot); check the path and the file"
}
