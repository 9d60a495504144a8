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
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/hostcheck"
)

// Kata's check messages, kept word for word.
const (
	project               = "Kata Containers"
	successMessageCapable = "System is capable of running " + project
	successMessageCreate  = "System can currently create " + project
	failMessage           = "System is not capable of running " + project
	noNetworkEnv          = "KATA_CHECK_NO_NETWORK"
)

// checkCommand is `kata-runtime check` (alias kata-check): Kata's host
// checks, then the guest kernel's FUSE submount fix status and what sandbox
// creation will do about it. Its exit code is that prediction: 1 when the
// shim would refuse the sandbox (or, with --strict, when the kernel is
// vulnerable or unknown at all), 0 otherwise.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:    "check",
		Aliases: []string{"kata-check"},
		Usage:   "tests if system can run " + project + " and what sandbox creation will do about the guest kernel",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "check-version-only", Usage: "only compare the current and latest available versions (needs the network, which this build does not use)"},
			&cli.BoolFlag{Name: "include-all-releases", Usage: "don't filter out pre-release release versions (no effect: no network)"},
			// Kata honours KATA_CHECK_NO_NETWORK set to any value, so it is read
			// in Action rather than parsed as a boolean here.
			&cli.BoolFlag{Name: "no-network-checks", Aliases: []string{"n"}, Usage: "do not run any checks using the network (none are run anyway); env " + noNetworkEnv + " set to any value does the same"},
			&cli.BoolFlag{Name: "only-list-releases", Usage: "only list newer available releases (needs the network, which this build does not use)"},
			&cli.BoolFlag{Name: "strict", Aliases: []string{"s"}, Usage: "also fail when the guest kernel is vulnerable or its fix status unknown, whatever the policy"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "display the list of checks performed"},
		},
		Action: func(c *cli.Context) error {
			code := runCheck(c.Context, checkOptions{
				ConfigPath:       c.String("config"),
				Verbose:          c.Bool("verbose"),
				NoNetwork:        c.Bool("no-network-checks") || os.Getenv(noNetworkEnv) != "",
				Strict:           c.Bool("strict"),
				CheckVersionOnly: c.Bool("check-version-only"),
				OnlyListReleases: c.Bool("only-list-releases"),
				Stdout:           c.App.Writer,
				Stderr:           c.App.ErrWriter,
			})
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

type checkOptions struct {
	ConfigPath       string
	Verbose          bool
	NoNetwork        bool
	Strict           bool
	CheckVersionOnly bool
	OnlyListReleases bool
	Stdout, Stderr   io.Writer
	// Host overrides the host files (tests); zero means the real ones.
	Host hostcheck.Options
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

	if o.CheckVersionOnly || o.OnlyListReleases {
		flag := "--check-version-only"
		if o.OnlyListReleases {
			flag = "--only-list-releases"
		}
		fmt.Fprintf(o.Stderr, "ERROR: %s needs the network to ask GitHub for Kata releases; kata-submount-guard's kata-runtime makes no network calls. See https://github.com/kata-containers/kata-containers/releases\n", flag)
		return 1
	}
	if !o.NoNetwork {
		logger.Warn("Not running network checks: kata-submount-guard's kata-runtime makes no network calls (pass --no-network-checks or set " + noNetworkEnv + " to silence this)")
	}

	r, id, err := resolveConfig(ctx, o.ConfigPath)
	if err != nil {
		logger.Error(err)
		fmt.Fprintln(o.Stderr, err)
		return 1
	}

	hostOpts := o.Host
	hostOpts.Hypervisor = r.HypervisorName
	host, err := hostcheck.Run(ctx, hostOpts)
	if err != nil {
		logger.WithError(err).Error("host checks failed")
		fmt.Fprintf(o.Stderr, "ERROR: %s: %v\n", failMessage, err)
	} else {
		logHostChecks(logger, host)
		if host.Capable {
			fmt.Fprintln(o.Stdout, successMessageCapable)
			if host.KVM != nil && host.KVM.OK && os.Geteuid() == 0 {
				fmt.Fprintln(o.Stdout, successMessageCreate)
			}
		} else {
			fmt.Fprintf(o.Stderr, "ERROR: %s\n", failMessage)
		}
	}

	pl, err := policy.Decide(ctx, policy.Input{Resolved: r, ContainerType: policy.PodSandbox, Inspector: kernelInspector(o.Inspector), InspectAlways: true})
	if err != nil {
		fmt.Fprintf(o.Stderr, "ERROR: guest kernel check: %v\n", err)
		return 1
	}
	writeKernelSection(o.Stdout, r, id, pl)

	switch {
	case pl.Action == plan.Refuse:
		fmt.Fprintf(o.Stderr, "ERROR: sandbox creation will be refused: %s\n", pl.Reason)
		return 1
	case pl.ProtectionUnavailable:
		fmt.Fprintf(o.Stderr, "ERROR: guest kernel %s is %s and its sandboxes would run unprotected: %s\n", pl.Kernel.Path, pl.Kernel.Verdict, pl.UnprotectedReason)
		return 1
	case o.Strict && (pl.Kernel.Verdict == verdict.Vulnerable || pl.Kernel.Verdict == verdict.Unknown) && pl.KernelInspected:
		fmt.Fprintf(o.Stderr, "ERROR: --strict: guest kernel %s is %s: %s\n", pl.Kernel.Path, pl.Kernel.Verdict, pl.Reason)
		return 1
	case pl.Action == plan.Warn:
		logger.WithField("kernel", pl.Kernel.Path).Warn(pl.Reason)
	}
	return 0
}

// logHostChecks logs each check with Kata's messages and fields.
func logHostChecks(logger *logrus.Entry, host *hostcheck.Result) {
	for _, c := range host.Checks {
		fields := logrus.Fields{"type": string(c.Kind), "name": c.Name, "description": c.Description}
		if c.Detail != "" {
			fields["detail"] = c.Detail
		}
		l := logger.WithFields(fields)
		switch {
		case c.Kind == hostcheck.KindModule && c.OK:
			l.Info("kernel property found")
		case c.Kind == hostcheck.KindModule:
			l.Errorf("kernel property %s not found", c.Name)
		case c.OK:
			l.Info("CPU property found")
		default:
			l.Error("CPU property not found")
		}
	}
	if host.KVM != nil {
		l := logger.WithField("check-type", "full").WithField("device", host.KVM.Name)
		if host.KVM.OK {
			l.WithField("feature", "create-vm").Info("feature available")
		} else {
			l.WithField("reason", host.KVM.Detail).Error("cannot create VM")
		}
	}
}

// writeKernelSection prints the guest-kernel part of the check.
func writeKernelSection(w io.Writer, r *config.Resolved, id delegate.Identity, p *plan.Plan) {
	g := r.Guard
	k := p.Kernel
	fmt.Fprintln(w, "Guest kernel (FUSE submount fix, Linux c4d361f66ac9):")
	row := func(name, value string) { fmt.Fprintf(w, "  %-18s %s\n", name+":", value) }
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
