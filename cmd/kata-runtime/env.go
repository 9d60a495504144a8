package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/log"
	"github.com/urfave/cli/v2"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/shim/delegate"
)

// envFormatSuffix is appended to Kata's Meta.Version (1.0.27 in Kata 4.1.0)
// when our fields are merged into its output. Alone, without Kata's, the
// output's Meta.Version is the suffix without its dash.
const envFormatSuffix = "-submount-guard.1"

// envCommand is `kata-runtime env` (alias kata-env): Kata's own env (its
// kata-runtime, with the flags given) with the guest kernel's fix status
// added to its Kernel section and a SubmountGuard section appended.
func envCommand() *cli.Command {
	return &cli.Command{
		Name:    "env",
		Aliases: []string{"kata-env"},
		Usage:   "display settings (Kata's own, plus the guest kernel's FUSE submount fix and the guard). Default to TOML",
		// Kata's; passed on to it.
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "Format output as JSON"}},
		Action: func(c *cli.Context) error {
			if err := runEnv(c.Context, envOptions{ConfigPath: c.String("config"), KataArgs: kataArgs(c, "env"), JSON: c.Bool("json"), Stdout: c.App.Writer, Stderr: c.App.ErrWriter}); err != nil {
				return cli.Exit(err, 1)
			}
			return nil
		},
	}
}

type envOptions struct {
	ConfigPath string
	// KataArgs is the argv of Kata's kata-runtime: global flags, env,
	// env's flags.
	KataArgs []string
	JSON     bool
	Stdout   io.Writer
	Stderr   io.Writer
	// Inspector replaces guestkernel.Inspect (nil: the real one).
	Inspector policy.Inspector
}

// EnvInfo is our part of env, in Kata's section names. Merged, KernelFix
// joins Kata's Kernel section, Meta.Version is Kata's with envFormatSuffix,
// and SubmountGuard is appended; alone (no output of Kata's), these three
// sections are the whole output.
type EnvInfo struct {
	Kernel        KernelInfo
	Meta          MetaInfo
	SubmountGuard GuardInfo
}

// KernelInfo is Kata's Kernel section (Path, Parameters) with ours added.
type KernelInfo struct {
	Path       string
	Parameters string
	KernelFix
}

// KernelFix is what we add to Kata's Kernel section: Version is the
// upstream version of the guest kernel ("6.1.76"), SubmountFix the verdict
// (fixed, vulnerable, unaffected, unknown, or "not inspected"), Evidence
// what decided it (btf, override, version, none), Reason why.
type KernelFix struct {
	Version     string
	SubmountFix string
	Evidence    string
	Reason      string
}

type MetaInfo struct{ Version string }

// GuardInfo is the effective [submount_guard] policy and what sandbox
// creation would do with this configuration.
type GuardInfo struct {
	ConfigSource string
	Hypervisors  []string
	// Hypervisor and KernelPath are the table and image the verdict is
	// about (the strictest outcome when the file holds several tables,
	// whichever Kata's own Kernel section shows).
	Hypervisor         string
	KernelPath         string
	OnVulnerable       string
	OnUnknown          string
	VirtiofsProtection string
	FixedReleases      []string
	DelegateShim       string
	// DelegateKind is which Kata shim DelegateShim is (go-3, go-4,
	// runtime-rs): its rules chose the configuration file.
	DelegateKind    string
	DelegateVersion string
	// DelegateRuntime is Kata's kata-runtime whose env this output
	// extends; DelegateRuntimeError says why its output is not merged
	// (not found, failed), empty when it is.
	DelegateRuntime      string
	DelegateRuntimeError string
	UpstreamVirtiofsd    string
	StateDir             string
	KernelCacheDir       string
	Action               string
	Protection           string
	Reason               string
}

func runEnv(ctx context.Context, o envOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	ctx = log.WithLogger(ctx, kataLogger(o.Stderr, false))
	if err := notDelegated(); err != nil {
		return err
	}
	r, id, err := resolveConfig(ctx, o.ConfigPath)
	if err != nil {
		return err
	}
	// Kata's first, as check does: its messages, then ours.
	kata := findKataCLI(r, id.Kind)
	o.KataArgs = withConfig(o.KataArgs, r.Path)
	var kataOut bytes.Buffer
	res := kata.run(ctx, o.KataArgs, &kataOut, o.Stderr)

	pl, err := policy.Decide(ctx, policy.Input{Resolved: r, ContainerType: policy.PodSandbox, Inspector: kernelInspector(o.Inspector), InspectAlways: true})
	if err != nil {
		return fmt.Errorf("guest kernel check: %w", err)
	}
	ours := guardEnv(r, id, pl)
	ours.SubmountGuard.DelegateRuntime = kata.Path
	if res.Ran && res.Err == nil {
		merged, err := mergeEnv(kataOut.Bytes(), ours, o.JSON)
		if err == nil {
			_, err = o.Stdout.Write(merged)
			return err
		}
		res.Err = fmt.Errorf("its output (%s %s) cannot be extended: %w", kata.Path, strings.Join(o.KataArgs, " "), err)
	}
	if res.Err != nil {
		ours.SubmountGuard.DelegateRuntimeError = res.Err.Error()
	} else {
		ours.SubmountGuard.DelegateRuntimeError = kata.Missing
	}
	if err := writeEnv(o.Stdout, ours, o.JSON); err != nil {
		return err
	}
	switch {
	case res.Err != nil:
		return fmt.Errorf("Kata's env failed: %w; only the guard's sections are printed", res.Err)
	case kata.Broken:
		return errors.New(kata.Missing)
	}
	return nil
}

// guardEnv is our part of env for r and its plan.
func guardEnv(r *config.Resolved, id delegate.Identity, pl *plan.Plan) EnvInfo {
	h := r.Hypervisor
	for _, c := range r.Hypervisors {
		if c.Name == pl.Hypervisor {
			h = c.Config
		}
	}
	g := r.Guard
	env := EnvInfo{
		Kernel: KernelInfo{Path: h.Kernel, Parameters: h.KernelParams,
			KernelFix: KernelFix{Version: pl.Kernel.Version, SubmountFix: "not inspected", Reason: pl.Kernel.Reason}},
		Meta: MetaInfo{Version: strings.TrimPrefix(envFormatSuffix, "-")},
		SubmountGuard: GuardInfo{
			ConfigSource: string(r.Source), Hypervisor: pl.Hypervisor, KernelPath: pl.Kernel.Path,
			OnVulnerable: string(g.OnVulnerable), OnUnknown: string(g.OnUnknown),
			VirtiofsProtection: string(g.VirtiofsProtection), FixedReleases: g.FixedReleases, DelegateShim: g.DelegateShim,
			DelegateKind: string(id.Kind), DelegateVersion: id.Version,
			UpstreamVirtiofsd: g.UpstreamVirtiofsd, StateDir: g.StateDir, KernelCacheDir: statedir.KernelCacheDir(g.StateDir),
			Action: string(pl.Action), Protection: string(pl.Protection), Reason: pl.Reason,
		},
	}
	if pl.KernelInspected {
		env.Kernel.SubmountFix, env.Kernel.Evidence = string(pl.Kernel.Verdict), string(pl.Kernel.Evidence)
	}
	for _, c := range r.Hypervisors {
		env.SubmountGuard.Hypervisors = append(env.SubmountGuard.Hypervisors, c.Name)
	}
	return env
}

// writeEnv prints our part alone.
func writeEnv(w io.Writer, env EnvInfo, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(env)
	}
	return toml.NewEncoder(w).Encode(env)
}
