package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// Exit codes of `guest-kernel inspect`.
const (
	exitUsage      = 1 // bad command line
	exitUnreadable = 2 // some path could not be read or parsed
)

const inspectUsage = "kata-runtime guest-kernel inspect [--json] [--fixed-release R]... PATH..."

func guestKernelCommand() *cli.Command {
	return &cli.Command{
		Name:  "guest-kernel",
		Usage: "guest kernel images and the FUSE submount fix (Linux c4d361f66ac9)",
		Subcommands: []*cli.Command{{
			Name:      "inspect",
			Usage:     "report format, version, BTF evidence and a verdict for each kernel image",
			ArgsUsage: "PATH...",
			Description: "Flags go before the first PATH; a PATH starting with '-' is a usage error (exit 1).\n" +
				"Exit status: 0 when every PATH was read and classified (whatever the verdict),\n" +
				"2 when any PATH could not be read or parsed (its verdict is then unknown, with an error).",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "json", Usage: "print a JSON array with one object per PATH"},
				&cli.StringSliceFlag{Name: "fixed-release", Usage: "a release (`uname -r`) known to carry the fix; repeat for more"},
				&cli.StringFlag{Name: "cache-dir", Usage: "reuse and store results in `DIR` (default: no cache)"},
				// Benchmarks only: skipping payloads loses BTF evidence.
				&cli.BoolFlag{Name: "header-only", Hidden: true},
			},
			Action: inspectKernels,
		}},
	}
}

func inspectKernels(c *cli.Context) error {
	paths := c.Args().Slice()
	if len(paths) == 0 {
		return cli.Exit("guest-kernel inspect: no PATH given (usage: "+inspectUsage+")", exitUsage)
	}
	// urfave/cli v2 parses flags up to the first PATH only; a flag after it
	// would be taken for a path and reported unreadable (exit 2).
	for _, p := range paths {
		if strings.HasPrefix(p, "-") {
			return cli.Exit(fmt.Sprintf("guest-kernel inspect: %q comes after a PATH: flags go before the paths (%s); name a file that starts with '-' as ./NAME",
				p, inspectUsage), exitUsage)
		}
	}
	opts := verdict.Options{
		FixedReleases: c.StringSlice("fixed-release"),
		CacheDir:      c.String("cache-dir"),
		HeaderOnly:    c.Bool("header-only"),
	}
	reports := make([]*verdict.Report, 0, len(paths))
	failed := 0
	for _, p := range paths {
		rep, err := guestkernel.Inspect(c.Context, p, opts)
		if err != nil {
			failed++
		}
		reports = append(reports, rep)
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else if err := printReports(w, reports); err != nil {
		return err
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("guest-kernel inspect: %d of %d kernel images could not be inspected", failed, len(paths)), exitUnreadable)
	}
	return nil
}

// kernelInspector is the guest kernel inspector of check and env: insp, or
// else guestkernel.Inspect in this process, so that check predicts what the
// shim's start decides.
func kernelInspector(insp policy.Inspector) policy.Inspector {
	if insp != nil {
		return insp
	}
	return policy.InspectorFunc(guestkernel.Inspect)
}

// printReports writes one block per report, for people.
func printReports(w io.Writer, reports []*verdict.Report) error {
	var b strings.Builder
	for i, r := range reports {
		if i > 0 {
			b.WriteString("\n")
		}
		line := func(key, value string) {
			if value != "" {
				fmt.Fprintf(&b, "  %-12s %s\n", key+":", value)
			}
		}
		if r.Error != "" {
			fmt.Fprintf(&b, "%s: %s (error)\n", r.Path, r.Verdict)
			line("error", r.Error)
		} else {
			fmt.Fprintf(&b, "%s: %s (evidence: %s)\n", r.Path, r.Verdict, r.Evidence)
		}
		if r.Format != "" {
			line("format", fmt.Sprintf("%s, arch %s, compression %s", r.Format, orNone(r.Arch, "unknown"), orNone(r.Compression, "unknown")))
		}
		line("release", r.Release)
		version := r.Version
		if version != "" && r.DistroTail != "" {
			version += " (" + r.DistroTail + ")"
		}
		line("version", version)
		line("banner", r.Banner)
		if r.Error == "" {
			btf := "absent"
			if r.BTFPresent {
				btf = fmt.Sprintf("present, FUSE types %s, struct fuse_submount_lookup %s", yesNo(r.BTFHasFUSE), yesNo(r.BTFHasFix))
			}
			line("btf", btf)
		}
		line("note", r.Note)
		line("reason", r.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
