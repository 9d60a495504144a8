package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/hostcheck"
)

// envFormatVersion versions the output of env. Kata's is 1.0.27; ours adds
// Kernel.Version/SubmountFix/Evidence/Reason and SubmountGuard, and leaves
// out what only the agent or a running VM could tell.
const envFormatVersion = "1.0.27-submount-guard.1"

// envCommand is `kata-runtime env` (alias kata-env).
func envCommand() *cli.Command {
	return &cli.Command{
		Name:    "env",
		Aliases: []string{"kata-env"},
		Usage:   "display settings. Default to TOML",
		Flags:   []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "Format output as JSON"}},
		Action: func(c *cli.Context) error {
			if err := runEnv(c.Context, envOptions{ConfigPath: c.String("config"), JSON: c.Bool("json"), Stdout: c.App.Writer, Stderr: c.App.ErrWriter}); err != nil {
				return cli.Exit(err, 1)
			}
			return nil
		},
	}
}

type envOptions struct {
	ConfigPath string
	JSON       bool
	Stdout     io.Writer
	Stderr     io.Writer
	Host       hostcheck.Options
	// Inspector replaces guestkernel.Inspect (nil: the real one).
	Inspector policy.Inspector
}

// EnvInfo is Kata's env output (same section and field names) with the
// guest kernel's fix status and the guard's policy added. Fields only the
// agent or a running sandbox could fill are left out or empty.
type EnvInfo struct {
	Kernel        KernelInfo
	Meta          MetaInfo
	Image         PathInfo
	Initrd        PathInfo
	Hypervisor    HypervisorInfo
	Runtime       RuntimeInfo
	Host          HostInfo
	Agent         AgentInfo
	SubmountGuard GuardInfo
}

type KernelInfo struct {
	Path       string
	Parameters string
	// Version is the upstream version of the guest kernel ("6.1.76"),
	// SubmountFix the verdict (fixed, vulnerable, unaffected, unknown),
	// Evidence what decided it (btf, override, version, none).
	Version     string
	SubmountFix string
	Evidence    string
	Reason      string
}

type MetaInfo struct{ Version string }

type PathInfo struct{ Path string }

type SecurityInfo struct {
	Rootless          bool
	DisableSeccomp    bool
	GuestHookPath     string
	EnableAnnotations []string
	ConfidentialGuest bool
}

type HypervisorInfo struct {
	MachineType       string
	Version           string
	Path              string
	BlockDeviceDriver string
	EntropySource     string
	SharedFS          string
	VirtioFSDaemon    string
	Msize9p           uint32
	MemorySlots       uint32
	Debug             bool
	SecurityInfo      SecurityInfo
}

type VersionInfo struct {
	Semver string
	Commit string
	Major  uint64
	Minor  uint64
	Patch  uint64
}

type RuntimeVersionInfo struct {
	OCI     string
	Version VersionInfo
}

type RuntimeInfo struct {
	Config              PathInfo
	Path                string
	GuestSeLinuxLabel   string
	Experimental        []string
	Version             RuntimeVersionInfo
	Debug               bool
	Trace               bool
	DisableGuestSeccomp bool
	DisableNewNetNs     bool
	SandboxCgroupOnly   bool
}

type DistroInfo struct{ Name, Version string }

type CPUInfo struct {
	Vendor string
	Model  string
	CPUs   int
}

type MemoryInfo struct{ Total, Free, Available uint64 }

type HostInfo struct {
	AvailableGuestProtections []string
	Kernel                    string
	Architecture              string
	Distro                    DistroInfo
	CPU                       CPUInfo
	Memory                    MemoryInfo
	VMContainerCapable        bool
	SupportVSocks             bool
}

type AgentInfo struct{ Debug, Trace bool }

// GuardInfo is the effective [submount_guard] policy and what sandbox
// creation would do with this configuration.
type GuardInfo struct {
	ConfigSource       string
	Hypervisors        []string
	OnVulnerable       string
	OnUnknown          string
	VirtiofsProtection string
	FixedReleases      []string
	DelegateShim       string
	// DelegateKind is which Kata shim DelegateShim is (go-3, go-4,
	// runtime-rs): its rules chose the configuration file.
	DelegateKind      string
	DelegateVersion   string
	UpstreamVirtiofsd string
	StateDir          string
	KernelCacheDir    string
	Action            string
	Protection        string
	Reason            string
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
	r, id, err := resolveConfig(ctx, o.ConfigPath)
	if err != nil {
		return err
	}
	plan, err := policy.Decide(ctx, policy.Input{Resolved: r, ContainerType: policy.PodSandbox, Inspector: kernelInspector(o.Inspector), InspectAlways: true})
	if err != nil {
		return fmt.Errorf("guest kernel check: %w", err)
	}
	hostOpts := o.Host
	hostOpts.Hypervisor = r.HypervisorName
	env := collectEnv(ctx, r, plan, hostOpts)
	env.SubmountGuard.DelegateKind, env.SubmountGuard.DelegateVersion = string(id.Kind), id.Version
	if o.JSON {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(env)
	}
	return toml.NewEncoder(o.Stdout).Encode(env)
}

func collectEnv(ctx context.Context, r *config.Resolved, plan *plan.Plan, hostOpts hostcheck.Options) EnvInfo {
	h := r.Hypervisor
	for _, c := range r.Hypervisors {
		if c.Name == plan.Hypervisor {
			h = c.Config
		}
	}
	f := r.File
	g := r.Guard
	env := EnvInfo{
		Meta: MetaInfo{Version: envFormatVersion},
		Kernel: KernelInfo{Path: h.Kernel, Parameters: h.KernelParams, Version: plan.Kernel.Version,
			Reason: plan.Kernel.Reason},
		Image:  PathInfo{Path: h.Image},
		Initrd: PathInfo{Path: h.Initrd},
		Hypervisor: HypervisorInfo{
			MachineType: orDefault(h.MachineType, kataDefaultMachineType(plan.Hypervisor)), Path: h.Path, Version: commandVersion(ctx, h.Path),
			BlockDeviceDriver: orDefault(h.BlockDeviceDriver, "virtio-scsi"), EntropySource: orDefault(h.EntropySource, "/dev/urandom"),
			SharedFS: h.SharedFS, VirtioFSDaemon: h.VirtioFSDaemon,
			Msize9p: orDefaultU(h.Msize9p, 8192), MemorySlots: orDefaultU(h.MemorySlots, 10), Debug: h.Debug,
			SecurityInfo: SecurityInfo{Rootless: h.Rootless, DisableSeccomp: h.DisableSeccomp, GuestHookPath: h.GuestHookPath,
				EnableAnnotations: h.EnableAnnotations, ConfidentialGuest: h.ConfidentialGuest},
		},
		Runtime: RuntimeInfo{
			Config: PathInfo{Path: r.Path}, GuestSeLinuxLabel: f.Runtime.GuestSeLinuxLabel,
			Version: RuntimeVersionInfo{OCI: specs.Version, Version: VersionInfo{Commit: vcsRevision()}},
			Debug:   f.Runtime.Debug, Trace: f.Runtime.Tracing, DisableGuestSeccomp: f.Runtime.DisableGuestSeccomp,
			DisableNewNetNs: f.Runtime.DisableNewNetNs, SandboxCgroupOnly: f.Runtime.SandboxCgroupOnly,
		},
		SubmountGuard: GuardInfo{
			ConfigSource: string(r.Source), OnVulnerable: string(g.OnVulnerable), OnUnknown: string(g.OnUnknown),
			VirtiofsProtection: string(g.VirtiofsProtection), FixedReleases: g.FixedReleases, DelegateShim: g.DelegateShim,
			UpstreamVirtiofsd: g.UpstreamVirtiofsd, StateDir: g.StateDir, KernelCacheDir: statedir.KernelCacheDir(g.StateDir),
			Action: string(plan.Action), Protection: string(plan.Protection), Reason: plan.Reason,
		},
	}
	if plan.KernelInspected {
		env.Kernel.SubmountFix, env.Kernel.Evidence = string(plan.Kernel.Verdict), string(plan.Kernel.Evidence)
	} else {
		env.Kernel.SubmountFix = "not inspected"
	}
	for _, c := range r.Hypervisors {
		env.SubmountGuard.Hypervisors = append(env.SubmountGuard.Hypervisors, c.Name)
	}
	if p, err := os.Executable(); err == nil {
		env.Runtime.Path = p
	}
	// Agent settings come from the file; Kata reports the last [agent.*]
	// table, and its shipped files hold one.
	for _, a := range f.Agents {
		env.Agent = AgentInfo{Debug: a.Debug, Trace: a.Tracing}
	}

	info, _ := hostcheck.Gather(hostcheck.InfoOptions{ProcCPUInfo: hostOpts.ProcCPUInfo})
	env.Host = HostInfo{
		Kernel: info.Kernel, Architecture: info.Architecture,
		Distro:        DistroInfo{Name: info.DistroName, Version: info.DistroVersion},
		CPU:           CPUInfo{Vendor: info.CPUVendor, Model: info.CPUModel, CPUs: info.CPUs},
		Memory:        MemoryInfo{Total: info.MemTotal, Free: info.MemFree, Available: info.MemAvailable},
		SupportVSocks: info.SupportVSocks,
	}
	hostOpts.NoModprobe = true // env reports; it does not load modules
	if res, err := hostcheck.Run(ctx, hostOpts); err == nil {
		env.Host.VMContainerCapable = res.Capable
	}
	return env
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orDefaultU(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// kataDefaultMachineType is Kata's built-in machine type where a table sets
// none (qemu: q35 on x86_64).
func kataDefaultMachineType(hypervisor string) string {
	if hypervisor == config.HypervisorQemu && runtime.GOARCH == "amd64" {
		return "q35"
	}
	return ""
}

// commandVersion is the first line of `<path> --version`, as Kata reports
// the hypervisor version; empty when it cannot be run.
func commandVersion(ctx context.Context, path string) string {
	if path == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// vcsRevision is the Makefile's stamp, else what the Go toolchain recorded.
func vcsRevision() string {
	if revision != "" && revision != "unknown" {
		return revision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
