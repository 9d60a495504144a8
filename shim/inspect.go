package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containerd/log"

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

// kernelInspector judges a guest kernel image from the inspection cache and,
// on a miss, runs `kata-runtime guest-kernel inspect --json` on it, which
// also fills the cache. The verdict is always judged here, from the facts.
// Of the options it passes on the fixed releases and the cache directory,
// all that hooks sets.
type kernelInspector struct {
	// command is kata-runtime's path; "" means inspectorName beside this
	// executable.
	command string
}

func (k kernelInspector) Inspect(ctx context.Context, path string, opts verdict.Options) (*verdict.Report, error) {
	if rep, ok := verdict.Cached(ctx, path, opts); ok {
		return rep, nil
	}
	command, err := k.path()
	if err == nil {
		log.G(ctx).WithFields(log.Fields{"kernel": path, "inspector": command}).Debug("guest kernel not in the inspection cache; inspecting it")
		var rep *verdict.Report
		rep, err = inspectWith(ctx, command, path, opts)
		if err == nil || rep != nil {
			return rep, err
		}
	}
	return nil, fmt.Errorf("no cached inspection in %s and %s cannot inspect it: %w; install kata-runtime from the same build beside containerd-shim-kata-v2",
		opts.CacheDir, inspectorName, err)
}

func (k kernelInspector) path() (string, error) {
	if k.command != "" {
		return k.command, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(self), inspectorName), nil
}

// inspectWith runs command's `guest-kernel inspect` on path. An image the
// inspector could not read gives its report (verdict unknown, with the
// error and the reason) and an error; a failure of the inspector itself
// gives no report.
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
	cmd.Stdout = &limitedWriter{w: &stdout, n: maxInspectorOutput}
	cmd.Stderr = &limitedWriter{w: &stderr, n: maxInspectorOutput}
	runErr := cmd.Run()
	var exit *exec.ExitError
	switch {
	case runErr == nil:
	case !errors.As(runErr, &exit):
		return nil, runErr // it names the command: "fork/exec PATH: ..."
	case exit.ExitCode() != exitUnreadable:
		if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
			return nil, fmt.Errorf("%s: %w: %s", command, runErr, msg)
		}
		return nil, fmt.Errorf("%s: %w", command, runErr)
	}
	var reps []verdict.Report
	if err := json.Unmarshal(stdout.Bytes(), &reps); err != nil || len(reps) != 1 {
		return nil, fmt.Errorf("%s printed no report for one image (%v): %.200q", command, err, stdout.Bytes())
	}
	rep := &reps[0]
	switch {
	case rep.Error != "" && rep.Verdict == verdict.Unknown:
		return rep, errors.New(rep.Error)
	case rep.Error != "" || runErr != nil:
		return nil, fmt.Errorf("%s reported verdict %s, error %q and exit status %v, which do not agree", command, rep.Verdict, rep.Error, runErr)
	}
	// Judged here, from the facts, as a cache hit is: the verdict is this
	// build's whatever kata-runtime's build.
	facts := verdict.Report{Path: path, Format: rep.Format, Arch: rep.Arch, Compression: rep.Compression, Banner: rep.Banner,
		Release: rep.Release, BTFPresent: rep.BTFPresent, BTFHasFUSE: rep.BTFHasFUSE, BTFHasFix: rep.BTFHasFix,
		BTFHasSubmounts: rep.BTFHasSubmounts, Note: rep.Note}
	verdict.Judge(&facts, opts.FixedReleases)
	return &facts, nil
}

// limitedWriter keeps the first n bytes written and drops the rest, so a
// runaway child cannot fill memory nor block on a full pipe.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		keep := min(len(p), l.n)
		l.n -= keep
		if _, err := l.w.Write(p[:keep]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
