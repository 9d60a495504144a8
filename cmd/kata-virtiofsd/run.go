package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

const usage = `Usage: kata-virtiofsd [virtiofsd options] [--guard-* options]

Configured as Kata's virtio_fs_daemon: takes the command line any Kata
launcher gives virtiofsd (Go runtime 3.2+/4.x: --syslog --cache=MODE
--shared-dir=DIR --fd=3; Go 2.x/3.0.x: --syslog -o cache=MODE -o no_posix_lock
-o source=DIR --fd=3 -f; runtime-rs: --socket-path SOCK --shared-dir DIR
--cache MODE; then <virtio_fs_extra_args>) and every other option of the Rust
virtiofsd 1.13, reads the sandbox's plan from the state dir, and execs the
upstream virtiofsd (Rust, or QEMU's C daemon with the options translated) with
the plan's protection applied, or serves the share itself. Once the socket
listens it prints "Waiting for vhost-user socket connection..." on stderr.

kata-submount-guard options (they override the plan; never passed on):
  --guard-protection=recover|no-submounts|none
        how to serve the share; default: the plan's
  --guard-upstream=PATH
        the virtiofsd to exec; default: the plan's upstream_virtiofsd, or
        without a plan ` + defaultUpstreamVirtiofsd + ` if it exists;
        none at all: kata-virtiofsd serves the share itself
  --guard-state-dir=DIR
        where the plans are (default ` + statedir.Default + `);
        set it when [submount_guard] state_dir is not the default
  --guard-no-plan=none|no-submounts|recover|fail
        protection for a sandbox without a plan (default none: as Kata)
  -h, --help     this text
  -V, --version  kata-virtiofsd's version
`

// launcher runs kata-virtiofsd; its fields are what main wires in.
type launcher struct {
	readPlan planReader
	// defaultUpstream is [submount_guard]'s default upstream_virtiofsd,
	// used without a plan and without --guard-upstream when it exists.
	defaultUpstream string
	serve           func(context.Context, *virtiofsd.Options) error
	stdout          io.Writer
	stderr          io.Writer
	revision        string
	// syslogAddr is the syslog socket; empty: the system's.
	syslogAddr string
}

// run decides how the share is served and execs the upstream virtiofsd (it
// returns only on failure) or serves it. Every failure is logged once, and
// also printed to stderr when the log goes to syslog, because Kata shows a
// daemon's stderr when it fails.
func (l launcher) run(ctx context.Context, args []string) (err error) {
	useSyslog := slices.Contains(args, "--syslog")
	logger, syslogErr := newLogger(l.stderr, useSyslog, l.syslogAddr)
	entry := logrus.NewEntry(logger).WithField("name", "kata-virtiofsd")
	ctx = log.WithLogger(ctx, entry)
	if syslogErr != "" {
		log.G(ctx).WithField("error", syslogErr).Warn("cannot log to syslog; logging to stderr")
		useSyslog = false
	}
	defer func() {
		if err == nil {
			return
		}
		log.G(ctx).WithError(err).Error("kata-virtiofsd cannot start the share")
		if useSyslog || !logger.IsLevelEnabled(logrus.ErrorLevel) {
			fmt.Fprintf(l.stderr, "kata-virtiofsd: %v\n", err)
		}
	}()

	o, err := virtiofsd.Parse(args)
	if err != nil {
		return err
	}
	if o.Help {
		_, err = io.WriteString(l.stdout, usage)
		return err
	}
	if o.Version {
		_, err = fmt.Fprintf(l.stdout, "kata-virtiofsd (kata-submount-guard) %s\n", l.revision)
		return err
	}
	// --log-level (or -d) applies to our messages as to the daemon's; a
	// failure still reaches stderr (above).
	logger.SetLevel(virtiofsd.LogLevel(o.LogLevel))
	if o.SandboxID != "" {
		ctx = log.WithLogger(ctx, log.G(ctx).WithField("sandbox", o.SandboxID))
	}
	if o.FD >= 0 {
		if err := virtiofsd.CheckListener(o.FD); err != nil {
			return err
		}
	}

	d, err := decide(o, l.readPlan, l.defaultUpstream)
	if err != nil {
		return err
	}
	fields := logrus.Fields{
		"protection":      d.protection,
		"protection_from": d.protectionFrom,
		"shared_dir":      o.SharedDir,
	}
	if d.noPlan != "" {
		fields["no_plan"] = d.noPlan
	} else if d.plan != nil {
		fields["plan"] = d.planPath
		if plan := d.plan.Protection; d.protectionFrom != "plan" && plan != d.protection {
			fields["plan_protection"] = plan
		}
	}
	// A decision without a plan is logged as a warning: the sandbox did not
	// get kata-submount-guard's verdict.
	logDecision := func(f logrus.Fields, msg string) {
		e := log.G(ctx).WithFields(f)
		if d.noPlan != "" {
			e.Warn(msg)
		} else {
			e.Info(msg)
		}
	}

	if d.protection == protection.Recover || d.upstream == "" {
		if o.PrintCapabilities {
			// vhost-user.json: a file system backend, printed as QEMU's C
			// daemon does; none of Rust virtiofsd's optional features
			// (migration, separate options).
			_, err = io.WriteString(l.stdout, "{\n  \"type\": \"fs\"\n}\n")
			return err
		}
		why := "protection recover (from " + d.protectionFrom + ") needs kata-virtiofsd's own daemon"
		switch {
		case d.protection == protection.Recover:
		case d.plan != nil:
			why = "no upstream virtiofsd is configured (neither --guard-upstream nor the plan's upstream_virtiofsd), so kata-virtiofsd serves the share itself"
		default:
			why = fmt.Sprintf("no upstream virtiofsd is configured (no --guard-upstream, no plan, and [submount_guard]'s default upstream_virtiofsd %s does not exist), "+
				"so kata-virtiofsd serves the share itself", l.defaultUpstream)
		}
		o.Protection = d.protection
		if d.protection == protection.NoSubmounts {
			o.AnnounceSubmounts = false
		}
		notImplemented := func(err error) error {
			return fmt.Errorf("%s: %w; use an upstream virtiofsd (--guard-upstream=PATH) with protection no-submounts or none", why, err)
		}
		// Refused before the socket exists and the ready line is out, so
		// that runtime-rs sees the daemon exit instead of starting the VM.
		if _, err := virtiofsd.CheckServe(o); err != nil {
			return notImplemented(err)
		}
		removeSocket, err := virtiofsd.Listen(o)
		if err != nil {
			return err
		}
		defer removeSocket()
		logDecision(fields, "serving the share with kata-virtiofsd's own daemon")
		if err := l.announceReady(o); err != nil {
			return err
		}
		if err := l.serve(ctx, o); err != nil {
			if errdefs.IsNotImplemented(err) {
				return notImplemented(err)
			}
			return fmt.Errorf("serving the share: %w", err)
		}
		return nil
	}

	if err := notSelf(d.upstream); err != nil {
		return err
	}
	daemon, err := virtiofsd.Detect(ctx, d.upstream, statedir.VirtiofsdCacheDir(o.Guard.StateDir))
	if err != nil {
		return fmt.Errorf("%w (upstream from %s)", err, d.upstreamFrom)
	}
	// runtime-rs has the daemon create its socket and waits for its ready
	// line; kata-virtiofsd creates the socket, passes it on as --fd and
	// prints that line itself, whatever the upstream logs and where.
	removeSocket, err := virtiofsd.Listen(o)
	if err != nil {
		return err
	}
	// Probed here, just before the exec, since a syslog daemon may come
	// and go.
	upstreamArgs, adapted, err := virtiofsd.Translate(o, daemon, d.protection, virtiofsd.ProbeHost())
	if err != nil {
		removeSocket()
		return err
	}
	for _, a := range adapted {
		log.G(ctx).WithField("upstream", daemon.Path).Warn(a)
	}
	fields["upstream"] = daemon.Path
	fields["upstream_from"] = d.upstreamFrom
	fields["flavour"] = daemon.Flavour
	fields["version"] = daemon.Version
	fields["args"] = strings.Join(upstreamArgs, " ")
	logDecision(fields, "starting upstream virtiofsd")
	if err := l.announceReady(o); err != nil {
		removeSocket()
		return err
	}
	err = virtiofsd.Exec(o, daemon, upstreamArgs)
	removeSocket()
	return err
}

// announceReady prints virtiofsd.ReadyLine on stderr once the vhost-user
// socket listens, in every mode and whether or not the log goes to syslog:
// runtime-rs 4.1.0 reads the daemon's stderr and starts the VM only when
// that line comes (run_virtiofsd in share_virtio_fs_standalone.rs), with no
// timeout. The Go runtime ignores the daemon's stderr. Nothing is printed
// without a socket (--print-capabilities).
func (l launcher) announceReady(o *virtiofsd.Options) error {
	if o.FD < 0 {
		return nil
	}
	if err := virtiofsd.AnnounceReady(l.stderr, o); err != nil {
		return fmt.Errorf("writing the ready line to stderr: %w", err)
	}
	return nil
}

// notSelf refuses an upstream that is kata-virtiofsd itself, which would
// exec itself for ever.
func notSelf(upstream string) error {
	self, err := os.Executable()
	if err != nil {
		return nil
	}
	a, errA := os.Stat(self)
	b, errB := os.Stat(upstream)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return fmt.Errorf("upstream virtiofsd %s is kata-virtiofsd itself: point --guard-upstream or upstream_virtiofsd at the real virtiofsd: %w", upstream, errdefs.ErrInvalidArgument)
	}
	return nil
}
