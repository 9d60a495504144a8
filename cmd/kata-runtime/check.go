package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/shim/delegate"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Kata's environment variable that acts as --no-network-checks; Kata's
// check reads it from the environment it inherits.
const noNetworkEnv = "KATA_CHECK_NO_NETWORK"

// checkCommand is `kata-runtime check` (alias kata-check): Kata's own check
// (its kata-runtime, with the flags given), then the guest kernel's FUSE
// submount fix status and what sandbox creation will do about it. It fails
// (exit 1) when Kata's check fails or when the guard's does: the shim would
// refuse the sandbox, a protection asked for cannot apply, or, with
// --strict, the kernel is vulnerable or unknown at all.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:    "check",
		Aliases: []string{"kata-check"},
		Usage:   "tests if system can run Kata Containers (Kata's own check) and what sandbox creation will do about the guest kernel",
		// All of these are Kata's; each is passed on to it as given.
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "check-version-only", Usage: "only compare the current and latest available versions (Kata's check alone; needs the network)"},
			&cli.BoolFlag{Name: "include-all-releases", Usage: "don't filter out pre-release release versions"},
			&cli.BoolFlag{Name: "no-network-checks", Aliases: []string{"n"}, Usage: "do not run any checks using the network; env " + noNetworkEnv + " set to any value does the same"},
			&cli.BoolFlag{Name: "only-list-releases", Usage: "only list newer available releases (Kata's check alone; needs the network)"},
			&cli.BoolFlag{Name: "strict", Aliases: []string{"s"}, Usage: "perform strict checking; the guard's part also fails when the guest kernel is vulnerable or its fix status unknown, whatever the policy"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "display the list of checks performed"},
		},
		Action: func(c *cli.Context) error {
			code := runCheck(c.Context, checkOptions{
				ConfigPath: c.String("config"),
				KataArgs:   kataArgs(c, "check"),
				Verbose:    c.Bool("verbose"),
				Strict:     c.Bool("strict"),
				KataOnly:   c.Bool("check-version-only") || c.Bool("only-list-releases"),
				Stdout:     c.App.Writer,
				Stderr:     c.App.ErrWriter,
			})
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

type checkOptions struct {
	ConfigPath string
	// KataArgs is the argv of Kata's kata-runtime: global flags, check,
	// check's flags.
	KataArgs []string
	Verbose  bool
	Strict   bool
	// KataOnly is set by --check-version-only and --only-list-releases:
	// Kata's check then only talks about releases, and so do we.
	KataOnly       bool
	Stdout, Stderr io.Writer
	// Inspector replaces guestkernel.Inspect (nil: the real one).
	Inspector policy.Inspector
}

// kataLogger logs like Kata's kata-runtime: logrus text on stderr with its
// fields; warnings and errors only, unless verbose.
func kataLogger(w io.Writer, verbose bool) *logrus.Entry {
	l := logrus.New()
	l.Out = w
	l.Level = logrus.WarnLevel
	if verbose {
		l.Level = logrus.InfoLevel
	}
	return l.WithFields(logrus.Fields{"name": "kata-runtime", "source": "runtime", "arch": runtime.GOARCH, "pid": os.Getpid()})
}

// resolveConfig resolves the configuration from --config or the default
// paths (no annotations, no KATA_CONF_FILE) by the rules of the delegate
// shim it names (package delegate), so check predicts what start judges.
func resolveConfig(ctx context.Context, path string) (*config.Resolved, delegate.Identity, error) {
	return delegate.Resolve(ctx, config.Sources{ExplicitPath: path}, delegate.IdentifyGuard)
}

func runCheck(ctx context.Context, o checkOptions) int {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	logger := kataLogger(o.Stderr, o.Verbose)
	ctx = log.WithLogger(ctx, logger)
	if err := notDelegated(); err != nil {
		fmt.Fprintf(o.Stderr, "ERROR: %v\n", err)
		return 1
	}

	r, id, err := resolveConfig(ctx, o.ConfigPath)
	if err != nil {
		logger.Error(err)
		fmt.Fprintln(o.Stderr, err)
		return 1
	}
	kata := findKataCLI(r, id.Kind)
	o.KataArgs = withConfig(o.KataArgs, r.Path)
	if o.KataOnly {
		if kata.Path == "" {
			fmt.Fprintf(o.Stderr, "ERROR: --check-version-only and --only-list-releases are Kata's own check: %s\n", kata.Missing)
			return 1
		}
		if res := kata.run(ctx, o.KataArgs, o.Stdout, o.Stderr); res.Err != nil {
			return 1
		}
		return 0
	}
	kataRes := kata.run(ctx, o.KataArgs, o.Stdout, o.Stderr)

	var guardFailure string
	pl, err := policy.Decide(ctx, policy.Input{Resolved: r, ContainerType: policy.PodSandbox, Inspector: kernelInspector(o.Inspector), InspectAlways: true})
	if err != nil {
		guardFailure = fmt.Sprintf("guest kernel check: %v", err)
		fmt.Fprintf(o.Stderr, "ERROR: %s\n", guardFailure)
	} else {
		writeKernelSection(o.Stdout, r, id, pl, kataRes.describe(kata, "check"))
		guardFailure = judgePlan(o, pl)
		if guardFailure != "" {
			fmt.Fprintf(o.Stderr, "ERROR: %s\n", guardFailure)
		} else if pl.Action == plan.Warn {
			logger.WithField("kernel", pl.Kernel.Path).Warn(pl.Reason)
		}
	}

	kataFailed := kataRes.Failed(kata)
	if kataFailed && !kataRes.Ran {
		fmt.Fprintf(o.Stderr, "ERROR: %s\n", kata.Missing)
	}
	if summary := checkSummary(kataFailed, kataRes.Ran, guardFailure != ""); summary != "" {
		fmt.Fprintf(o.Stderr, "ERROR: kata-runtime check failed: %s\n", summary)
		return 1
	}
	return 0
}

// checkSummary says which part of check failed, and how the other fared;
// "" when neither failed.
func checkSummary(kataFailed, kataRan, guardFailed bool) string {
	switch {
	case kataFailed && guardFailed:
		return "Kata's check and the guard's check failed"
	case kataFailed:
		return "Kata's check failed (the guard's check passed)"
	case guardFailed && kataRan:
		return "the guard's check failed (Kata's check passed)"
	case guardFailed:
		return "the guard's check failed (Kata's check was not run)"
	}
	return ""
}

// judgePlan is the guard's part of check: why it fails, or "".
func judgePlan(o checkOptions, pl *plan.Plan) string {
	switch {
	case pl.Action == plan.Refuse:
		return "sandbox creation will be refused: " + pl.Reason
	case pl.ProtectionUnavailable:
		return fmt.Sprintf("guest kernel %s is %s and its sandboxes would run unprotected: %s", pl.Kernel.Path, pl.Kernel.Verdict, pl.UnprotectedReason)
	case o.Strict && (pl.Kernel.Verdict == verdict.Vulnerable || pl.Kernel.Verdict == verdict.Unknown) && pl.KernelInspected:
		return fmt.Sprintf("--strict: guest kernel %s is %s: %s", pl.Kernel.Path, pl.Kernel.Verdict, pl.Reason)
	}
	return ""
}

// writeKernelSection prints the guest-kernel part of the check.
// kata says what became of Kata's own check.
func writeKernelSection(w io.Writer, r *config.Resolved, id delegate.Identity, p *plan.Plan, kata string) {
	g := r.Guard
	k := p.Kernel
	fmt.Fprintln(w, "Guest kernel (FUSE submount fix, Linux c4d361f66ac9):")
	row := func(name, value string) { fmt.Fprintf(w, "  %-18s %s\n", name+":", value) }
	row("Kata's check", kata)
	row("delegate", fmt.Sprintf("%s: %s (%s)", g.DelegateShim, id.Kind, id.Line))
	row("config", fmt.Sprintf("%s (%s, as %s chooses it)", r.Path, r.Source, id.Kind.Describe()))
	if r.Ambiguous() {
		names := make([]string, len(r.Hypervisors))
		for i, h := range r.Hypervisors {
			names[i] = h.Name
		}
		row("hypervisors", strings.Join(names, ", ")+" (Kata picks one at random; the strictest is shown)")
	}
	row("hypervisor", p.Hypervisor)
	row("image", k.Path)
	version := k.Version
	if k.Release != "" && k.Release != k.Version {
		version = strings.TrimSpace(fmt.Sprintf("%s (release %s)", k.Version, k.Release))
	}
	if version == "" {
		version = "unknown"
	}
	if p.KernelInspected {
		row("version", version)
		row("verdict", string(k.Verdict))
		row("evidence", string(k.Evidence))
	} else {
		row("verdict", "not inspected")
	}
	if k.Reason != "" {
		row("detail", k.Reason)
	}
	row("policy", fmt.Sprintf("on_vulnerable = %s, on_unknown = %s, virtiofs_protection = %s", g.OnVulnerable, g.OnUnknown, g.VirtiofsProtection))
	creation := fmt.Sprintf("%s (protection %s)", p.Action, p.Protection)
	if p.Unprotected {
		creation += ", UNPROTECTED"
	}
	row("sandbox creation", creation)
	row("reason", p.Reason)
}
