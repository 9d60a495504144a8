package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/oserr"
)

// delegatedEnv is set in the environment of Kata's kata-runtime when ours
// runs it. A delegate_runtime that is a wrapper of ours (file identity
// cannot see through a script) would start ours again: that run refuses to
// delegate instead of looping.
const delegatedEnv = "KATA_SUBMOUNT_GUARD_DELEGATED"

// kataGlobalFlags are the global options of Kata's kata-runtime (the same
// in 3.0.2 through 4.1.0) that ours accepts and hands on to it. --config is
// also ours: the guard's section is about the same file.
func kataGlobalFlags() []cli.Flag {
	pass := " (passed to Kata's kata-runtime)"
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"kata-config"}, Usage: "Kata Containers configuration file `PATH`", TakesFile: true},
		&cli.StringFlag{Name: "log", Usage: "set the log file path where internal debug information is written" + pass, TakesFile: true},
		&cli.StringFlag{Name: "log-format", Usage: "set the format used by logs ('text' or 'json')" + pass},
		&cli.StringFlag{Name: "root", Usage: "root directory for storage of container state" + pass},
		&cli.StringFlag{Name: "rootless", Usage: "ignore cgroup permission errors ('true', 'false', or 'auto')" + pass},
		&cli.BoolFlag{Name: "systemd-cgroup", Usage: "enable systemd cgroup support" + pass},
	}
}

// forwardFlags renders the flags of list that the command line set, in
// list's order, as Kata's kata-runtime (urfave/cli v1) parses them.
func forwardFlags(c *cli.Context, list []cli.Flag) []string {
	var args []string
	for _, f := range list {
		name := f.Names()[0]
		if !c.IsSet(name) {
			continue
		}
		switch f.(type) {
		case *cli.BoolFlag:
			if c.Bool(name) {
				args = append(args, "--"+name)
			} else {
				args = append(args, "--"+name+"=false")
			}
		default:
			args = append(args, fmt.Sprintf("--%s=%s", name, c.String(name)))
		}
	}
	return args
}

// kataArgs is Kata's argv for subcommand: the global flags set, the
// subcommand, its flags set.
func kataArgs(c *cli.Context, subcommand string) []string {
	args := forwardFlags(c, kataGlobalFlags())
	args = append(args, subcommand)
	return append(args, forwardFlags(c, c.Command.Flags)...)
}

// withConfig names the file the guard judged to Kata's kata-runtime when
// the command line named none: left to its own default paths, Kata's CLI
// could judge another file than ours (its build's prefix, not the
// delegate's rules), and the merged report would describe two files.
func withConfig(args []string, path string) []string {
	for _, a := range args {
		if strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "--kata-config=") {
			return args
		}
	}
	return append([]string{"--config=" + path}, args...)
}

// notDelegated fails when this kata-runtime was started by ours as Kata's:
// running Kata's again would loop, and printing the guard's section twice
// would not help.
func notDelegated() error {
	if v := os.Getenv(delegatedEnv); v != "" {
		return fmt.Errorf("kata-submount-guard's kata-runtime was started as Kata's own by kata-submount-guard's kata-runtime (%s=%s): [submount_guard] delegate_runtime runs ours again, perhaps through a wrapper; set it to Kata's kata-runtime itself", delegatedEnv, v)
	}
	return nil
}

// kataCLI is Kata's own kata-runtime for a configuration.
type kataCLI struct {
	// Path is the binary to run; empty when there is none.
	Path string
	// Missing says, when Path is empty, why there is none and what to do.
	Missing string
	// Broken is true when Missing is an installation error (delegate_runtime
	// was set), not an absent optional part.
	Broken bool
}

// findKataCLI finds Kata's kata-runtime for r (see
// config.Guard.DelegateRuntimeCandidates), never this program itself: a
// candidate that is the same file as the running executable (our
// kata-runtime installed under Kata's name, or a link to it) is passed over.
func findKataCLI(r *config.Resolved, kind config.DelegateKind) kataCLI {
	g := r.Guard
	fix := fmt.Sprintf("install Kata's kata-runtime there, or set [submount_guard] delegate_runtime in %s to its path", r.Path)
	if g.DelegateRuntime == "" && kind == config.DelegateRuntimeRS {
		return kataCLI{Missing: "Kata's runtime-rs ships no kata-runtime (its tool is kata-ctl: run `kata-ctl check` and `kata-ctl env` for Kata's own checks); set [submount_guard] delegate_runtime in " + r.Path + " to run a Go kata-runtime here"}
	}
	self, selfErr := os.Stat("/proc/self/exe")
	var why []string
	for _, p := range g.DelegateRuntimeCandidates() {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("%s: %v", p, oserr.Cause(err)))
		case selfErr == nil && os.SameFile(self, fi):
			why = append(why, p+" is kata-submount-guard's kata-runtime itself")
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			why = append(why, p+" is not an executable file")
		default:
			return kataCLI{Path: p}
		}
	}
	if g.DelegateRuntime != "" {
		return kataCLI{Broken: true, Missing: fmt.Sprintf("Kata's kata-runtime from [submount_guard] delegate_runtime cannot be run: %s; %s", strings.Join(why, "; "), fix)}
	}
	return kataCLI{Missing: fmt.Sprintf("Kata's kata-runtime not found beside delegate_shim %s: %s; %s", g.DelegateShim, strings.Join(why, "; "), fix)}
}

// kataResult is how a run of Kata's kata-runtime ended.
type kataResult struct {
	// Ran is false when there was nothing to run (kataCLI.Missing).
	Ran bool
	// Err is nil when Kata's command succeeded: its exit status, or why
	// it could not start.
	Err error
}

// Failed tells whether the run counts against the merged exit status: Kata's
// command failed, or its CLI is missing by an installation error.
func (r kataResult) Failed(k kataCLI) bool {
	return r.Err != nil || (!r.Ran && k.Broken)
}

// run runs Kata's kata-runtime with args; its output goes to stdout and
// stderr as it comes.
func (k kataCLI) run(ctx context.Context, args []string, stdout, stderr io.Writer) kataResult {
	if k.Path == "" {
		return kataResult{}
	}
	cmd := exec.CommandContext(ctx, k.Path, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), delegatedEnv+"=1")
	if err := cmd.Run(); err != nil {
		return kataResult{Ran: true, Err: fmt.Errorf("%s %s: %w", k.Path, strings.Join(args, " "), err)}
	}
	return kataResult{Ran: true}
}

// describe says in one line, for the guard's section, what became of
// Kata's command.
func (r kataResult) describe(k kataCLI, command string) string {
	switch {
	case r.Ran && r.Err == nil:
		return fmt.Sprintf("%s %s: passed (its output is above)", k.Path, command)
	case r.Ran:
		return fmt.Sprintf("%s %s: FAILED (%v; its messages are above)", k.Path, command, errors.Unwrap(r.Err))
	case k.Broken:
		return "FAILED: " + k.Missing
	default:
		return "not run: " + k.Missing
	}
}
