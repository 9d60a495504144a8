package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/capped"
	"github.com/kata-submount-guard/kata-submount-guard/internal/oserr"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// inspectorName is the program that inspects a guest kernel image the cache
// does not know: kata-runtime from the same build, installed beside the shim
// (README, Install). The shim does not link the image parsers itself: their
// package initialisation alone would cost every start about half a
// millisecond, and a start finds its kernel in the cache but for the first
// sandbox after the image changed.
const inspectorName = "kata-runtime"

// exitUnreadable is `kata-runtime guest-kernel inspect`'s exit code for an
// image it could not read; its report then says why.
const exitUnreadable = 2

// maxInspectorOutput caps what is read of the inspector's stdout and stderr;
// its report for one image is about 2 KiB.
const maxInspectorOutput = 1 << 20

// inspectTimeout bounds one inspection. A cold read of the largest image
// measured took 0.25 s (BENCHMARKS.md); an image on a hung mount must not
// hold containerd's start (and the pod) forever.
const inspectTimeout = 30 * time.Second

// kernelInspector judges a guest kernel image from the inspection cache and,
// on a miss, runs `kata-runtime guest-kernel inspect --json` on it, which
// also fills the cache. The verdict is always judged here, from the facts.
// Of the options it passes on the fixed releases and the cache directory,
// all that policy.Decide sets. A kata-runtime that cannot inspect (missing, not
// executable, not ours, crashing, printing no report) is an installation
// error, a policy.InspectorError, never an unknown verdict: under the default
// on_unknown = warn that would let a vulnerable kernel start that
// on_vulnerable = refuse must stop.
type kernelInspector struct {
	// command is kata-runtime's path; "" means inspectorName beside this
	// executable.
	command string
	// timeout replaces inspectTimeout when not 0 (tests).
	timeout time.Duration
}

func (k kernelInspector) Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	if rep, ok := verdict.JudgeCached(ctx, path, opts); ok {
		return rep, nil
	}
	command, where, err := k.locate()
	if err != nil {
		return nil, &policy.InspectorError{Err: fmt.Errorf("guest kernel %s cannot be checked: %s and this shim cannot find its own executable, beside which %s is installed: %w: %w",
			path, notCached(opts.CacheDir), inspectorName, err, errdefs.ErrFailedPrecondition)}
	}
	log.G(ctx).WithFields(log.Fields{"kernel": path, "inspector": command}).Debug("guest kernel not in the inspection cache; inspecting it")
	timeout := k.timeout
	if timeout == 0 {
		timeout = inspectTimeout
	}
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := inspectWith(ictx, command, path, opts)
	if errors.Is(ictx.Err(), context.DeadlineExceeded) {
		return nil, &policy.InspectorError{Err: fmt.Errorf("guest kernel %s cannot be checked: the inspector %s did not finish within %s, and nothing was started; make sure the image can be read (a hung storage mount?) and retry: %w",
			path, command, timeout, errdefs.ErrUnavailable)}
	}
	if err == nil || rep != nil {
		return rep, err
	}
	return nil, &policy.InspectorError{Err: fmt.Errorf("guest kernel %s cannot be checked: %s and the inspector %s%s %w; install kata-submount-guard's kata-runtime, from the same build as containerd-shim-kata-v2, as %s: %w",
		path, notCached(opts.CacheDir), command, where, err, command, errdefs.ErrFailedPrecondition)}
}

func notCached(cacheDir string) string {
	if cacheDir == "" {
		return "there is no inspection cache"
	}
	return "it is not in the inspection cache " + cacheDir
}

// locate returns kata-runtime's path and, when it was looked for beside
// this executable, says so.
func (k kernelInspector) locate() (command, where string, err error) {
	if k.command != "" {
		return k.command, "", nil
	}
	self, err := os.Executable() // symlinks resolved: the real file
	if err != nil {
		return "", "", err
	}
	return filepath.Join(filepath.Dir(self), inspectorName), fmt.Sprintf(" (looked for beside the shim's executable %s)", self), nil
}

// inspectorProblem is why an inspector gave no report; its message
// completes "the inspector PATH ...".
type inspectorProblem string

func (p inspectorProblem) Error() string { return string(p) }

// inspectWith runs command's `guest-kernel inspect` on path. An image the
// inspector could not read gives its report (verdict unknown, with the
// error and the reason) and an error; a failure of the inspector itself
// gives no report and an inspectorProblem.
func inspectWith(ctx context.Context, command, path string, opts verdict.Options) (*verdict.Report, error) {
	args := []string{"guest-kernel", "inspect", "--json"}
	if opts.CacheDir != "" {
		args = append(args, "--cache-dir", opts.CacheDir)
	}
	for _, r := range opts.FixedReleases {
		args = append(args, "--fixed-release", r)
	}
	args = append(args, "--", path)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, command, args...)
	// Once killed, do not wait on a pipe a stray child of it still holds.
	cmd.WaitDelay = time.Second
	cmd.Stdout = &capped.Writer{W: &stdout, N: maxInspectorOutput}
	cmd.Stderr = &capped.Writer{W: &stderr, N: maxInspectorOutput}
	runErr := cmd.Run()
	var exit *exec.ExitError
	switch {
	case runErr == nil:
	case errors.Is(runErr, fs.ErrNotExist):
		return nil, inspectorProblem("does not exist")
	case errors.Is(runErr, fs.ErrPermission):
		return nil, inspectorProblem(fmt.Sprintf("is not executable (%v)", oserr.Cause(runErr)))
	case !errors.As(runErr, &exit):
		return nil, inspectorProblem(fmt.Sprintf("cannot be run (%v)", oserr.Cause(runErr)))
	case !exit.Exited():
		return nil, inspectorProblem(fmt.Sprintf("crashed (%v)", exit))
	case exit.ExitCode() != exitUnreadable:
		// Kata's own kata-runtime, which has no guest-kernel command,
		// ends here.
		detail := exit.String()
		if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
			detail += ": " + string(firstLine(msg, 200))
		}
		return nil, inspectorProblem(fmt.Sprintf("is not kata-submount-guard's kata-runtime or failed (%s)", detail))
	}
	var reps []verdict.Report
	if err := json.Unmarshal(stdout.Bytes(), &reps); err != nil || len(reps) != 1 {
		why := fmt.Sprintf("%d reports", len(reps))
		if err != nil {
			why = err.Error()
		}
		return nil, inspectorProblem(fmt.Sprintf("printed no report for one image (%s): %.200q", why, stdout.Bytes()))
	}
	rep := &reps[0]
	exitStatus := 0
	if exit != nil {
		exitStatus = exit.ExitCode()
	}
	switch {
	case rep.Error != "" && rep.Verdict == verdict.Unknown && exitStatus == exitUnreadable:
		return rep, errors.New(rep.Error)
	case rep.Error != "" || exitStatus != 0:
		return nil, inspectorProblem(fmt.Sprintf("reported verdict %s, error %q and exit status %d, which do not agree", rep.Verdict, rep.Error, exitStatus))
	}
	// Judged here, from the facts, as a cache hit is: the verdict is this
	// build's whatever kata-runtime's build.
	facts := rep.Facts()
	facts.Path = path
	verdict.Judge(&facts, opts.FixedReleases)
	return &facts, nil
}

// firstLine is b up to its first line break, at most n bytes.
func firstLine(b []byte, n int) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > n {
		b = b[:n]
	}
	return b
}
