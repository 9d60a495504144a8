package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Annotations and the environment variable Kata reads.
const (
	AnnotationConfigPath       = "io.katacontainers.config_path"
	AnnotationHypervisorPrefix = "io.katacontainers.config.hypervisor."
	AnnotationKernel           = AnnotationHypervisorPrefix + "kernel"
	AnnotationKernelHash       = AnnotationHypervisorPrefix + "kernel_hash"
	AnnotationImage            = AnnotationHypervisorPrefix + "image"
	AnnotationInitrd           = AnnotationHypervisorPrefix + "initrd"
	AnnotationKernelParams     = AnnotationHypervisorPrefix + "kernel_params"
	AnnotationSharedFS         = AnnotationHypervisorPrefix + "shared_fs"
	AnnotationVirtioFSDaemon   = AnnotationHypervisorPrefix + "virtio_fs_daemon"
	AnnotationVirtioFSArgs     = AnnotationHypervisorPrefix + "virtio_fs_extra_args"
	AnnotationVirtioFSCache    = AnnotationHypervisorPrefix + "virtio_fs_cache"
	AnnotationAssetHashType    = "io.katacontainers.asset_hash_type"

	EnvConfigFile = "KATA_CONF_FILE"
)

// DefaultConfigPaths are tried in order when no source names a file:
// the administrator's file, then the defaults of Kata's static build
// (prefix /opt/kata) and of distribution packages (prefix /usr). A Kata
// binary knows only its own prefix; trying both finds whichever is installed.
func DefaultConfigPaths() []string {
	return []string{
		"/etc/kata-containers/configuration.toml",
		"/opt/kata/share/defaults/kata-containers/configuration.toml",
		"/usr/share/defaults/kata-containers/configuration.toml",
	}
}

// RuntimeOptions is what the runtime options containerd hands a shim say
// about the configuration file. Decoding them is the shim's job
// (shim.DecodeRuntimeOptions); the rules that use them are here.
type RuntimeOptions struct {
	// ConfigPath is runtimeoptions.v1.Options' ConfigPath; "" when the
	// options name no file (none given, or runc options).
	ConfigPath string
	// Err is why the options could not be decoded. Kata's Go shims fail on
	// such options, runtime-rs warns and ignores them.
	Err error
}

// Sources are the inputs that choose Kata's configuration file.
type Sources struct {
	// Annotations of the bundle's config.json (nil for kata-runtime).
	Annotations map[string]string
	// RuntimeOptions are the runtime options containerd wrote to the
	// shim's stdin at start, as the shim decoded them (zero: none).
	RuntimeOptions RuntimeOptions
	// Getenv reads the environment (nil: no environment, as for
	// kata-runtime, which does not read KATA_CONF_FILE).
	Getenv func(string) string
	// ExplicitPath is kata-runtime's --config/--kata-config.
	ExplicitPath string
	// Delegate is the kind of Kata shim whose rules choose the file; ""
	// means DelegateGo3, the rules of every Kata before 4.0.
	// DelegateVersion is its release ("3.0.2"), when known: a few defaults
	// changed within a kind.
	Delegate        DelegateKind
	DelegateVersion string
	// DefaultPaths replaces DefaultConfigPaths() and RuntimeRSDefaultPaths
	// RuntimeRSDefaultConfigPaths() when not nil (tests).
	DefaultPaths          []string
	RuntimeRSDefaultPaths []string
	// Loaded is a file already loaded (with its drop-ins) from Loaded.Path;
	// Resolve uses it instead of reading that path again.
	Loaded *File
	// Root is where the host's / is mounted when the caller runs in a
	// mount namespace of its own (the kata-deploy companion's HOST_ROOT);
	// "" is this process's /. Every path in the sources and in the files is
	// then a host path, looked up under Root with its symlinks followed as
	// the host follows them, and Resolved keeps host paths. Hypervisor
	// annotations are not supported there.
	Root string
}

// HypervisorChoice is one [hypervisor.<name>] table with its effective
// values: Kata's defaults filled in, paths resolved, annotations applied.
type HypervisorChoice struct {
	Name   string     `json:"name"`
	Config Hypervisor `json:"config"`
}

// Resolved is the configuration Kata would use for one sandbox.
type Resolved struct {
	// Path is the configuration file, symlinks resolved; config.d beside
	// it was merged.
	Path   string `json:"path"`
	Source Source `json:"source"`
	File   *File  `json:"file"`
	// Delegate is the kind of Kata shim whose rules chose Path and applied
	// the annotations.
	Delegate        DelegateKind `json:"delegate_kind"`
	DelegateVersion string       `json:"delegate_version,omitempty"`

	// HypervisorName and Hypervisor are the active table. Kata's shipped
	// files hold exactly one. When a file holds several, Kata builds every
	// one (any invalid table fails) and keeps whichever its map iteration
	// yields last, which is random; Hypervisors then lists them all, sorted
	// by name, and consumers must consider each (policy.Decide takes the strictest
	// outcome). HypervisorName is the first of them.
	HypervisorName string             `json:"hypervisor_name"`
	Hypervisor     Hypervisor         `json:"hypervisor"`
	Hypervisors    []HypervisorChoice `json:"hypervisors"`

	Guard Guard `json:"submount_guard"`

	// Root is Sources.Root: where the host's / was mounted ("" for /).
	Root string `json:"root,omitempty"`
}

// Ambiguous reports whether Kata may pick any of several hypervisor tables.
func (r *Resolved) Ambiguous() bool { return len(r.Hypervisors) > 1 }

// Resolve finds the configuration file as the delegate of kind
// src.Delegate does (see DelegateKind; then the flag of kata-runtime, then
// the default paths), loads it with its drop-ins and applies the hypervisor
// annotations under that delegate's gates. Errors name the file, key or
// annotation to fix; a named file that does not exist wraps
// errdefs.ErrNotFound, a bad value errdefs.ErrInvalidArgument.
func Resolve(ctx context.Context, src Sources) (*Resolved, error) {
	kind := src.Delegate
	if kind == "" {
		kind = DelegateGo3
	}
	path, source, err := choosePathFor(ctx, src, kind)
	if err != nil {
		return nil, err
	}
	if !isHostRoot(src.Root) && len(src.Annotations) > 0 {
		return nil, fmt.Errorf("resolve %s under the host root %s: pod annotations are not supported there: %w", path, src.Root, errdefs.ErrInvalidArgument)
	}
	f := src.Loaded
	if f == nil || f.Path != path || f.root != src.Root {
		if f, err = loadIn(src.Root, path); err != nil {
			return nil, err
		}
	}
	r := &Resolved{Path: path, Source: source, File: f, Delegate: kind, DelegateVersion: src.DelegateVersion, Guard: f.Guard, Root: src.Root}

	names, err := hypervisorTables(f, kind, src.Annotations)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s has no [hypervisor.<name>] table (one of %s): Kata would boot its built-in defaults; add the table of the hypervisor you use: %w",
			path, strings.Join(hypervisorNames(), ", "), errdefs.ErrInvalidArgument)
	}
	for _, n := range names {
		h, err := effective(f, kind, defaultVirtioFSCache(kind, src.DelegateVersion), n, f.Hypervisors[n])
		if err != nil {
			return nil, err
		}
		if h, err = applyAnnotations(f, kind, n, h, src.Annotations); err != nil {
			return nil, err
		}
		r.Hypervisors = append(r.Hypervisors, HypervisorChoice{Name: n, Config: h})
	}
	r.HypervisorName, r.Hypervisor = r.Hypervisors[0].Name, r.Hypervisors[0].Config
	if r.Ambiguous() {
		log.G(ctx).WithField("config", path).WithField("hypervisors", names).
			Warn("configuration holds several hypervisor tables; Kata picks one at random, every one is considered")
	}
	return r, nil
}

// AnnotationRuntimeHypervisor lets a pod choose runtime-rs's hypervisor
// table among those the file has (KATA_ANNO_CFG_RUNTIME_HYPERVISOR,
// kata-types src/annotations/mod.rs, 4.1.0); it is not gated.
const AnnotationRuntimeHypervisor = "io.katacontainers.config.runtime.hypervisor_name"

// hypervisorTables lists the tables the delegate may boot from. Kata's Go
// runtime builds every [hypervisor.<name>] table and keeps one at random;
// runtime-rs takes [runtime] hypervisor_name, which the pod may switch to any
// table present (update_config_by_annotation, 4.1.0).
func hypervisorTables(f *File, kind DelegateKind, ann map[string]string) ([]string, error) {
	if kind != DelegateRuntimeRS {
		names := make([]string, 0, len(f.Hypervisors))
		for n := range f.Hypervisors {
			names = append(names, n)
		}
		sort.Strings(names)
		return names, nil
	}
	name := f.Runtime.HypervisorName
	if v, ok := ann[AnnotationRuntimeHypervisor]; ok {
		if _, present := f.Hypervisors[v]; present {
			name = v
		}
	}
	if name == "" {
		return nil, fmt.Errorf("%s: [runtime] hypervisor_name is not set; runtime-rs refuses the file (\"Hypervisor name is missing in the configuration\"); set it to the table you use: %w",
			f.origin("runtime.hypervisor_name"), errdefs.ErrInvalidArgument)
	}
	if _, ok := f.Hypervisors[name]; !ok {
		return nil, fmt.Errorf("%s: [runtime] hypervisor_name = %q names no [hypervisor.%s] table; runtime-rs refuses the file (\"Invalid hypervisor name\"): %w",
			f.origin("runtime.hypervisor_name"), name, name, errdefs.ErrInvalidArgument)
	}
	return []string{name}, nil
}

func describeSource(s Source) string {
	switch s {
	case SourceAnnotation:
		return "annotation " + AnnotationConfigPath
	case SourceRuntimeOptions:
		return "containerd runtime option ConfigPath"
	case SourceEnv:
		return "environment variable " + EnvConfigFile
	case SourceFlag:
		return "--config"
	}
	return string(s)
}

// resolvePath is Kata's ResolvePath: absolute, symlinks resolved, and the
// file must exist.
func resolvePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("file %s does not exist: %w", abs, errdefs.ErrNotFound)
		}
		return "", err
	}
	return resolved, nil
}

// defaultVirtioFSCache is Kata's virtio_fs_cache when the table sets none:
// "never" since Go 3.1.0 and in runtime-rs, "none" (the same mode's older
// name) in Go 2.x and 3.0.x (defaultVirtioFSCacheMode, pkg/katautils).
// An unknown version (a pinned delegate_kind) is taken as current.
func defaultVirtioFSCache(kind DelegateKind, version string) string {
	if kind == DelegateGo3 && releaseBefore(version, 3, 1) {
		return "none"
	}
	return "never"
}

// releaseBefore reports whether version ("3.0.2", "2.5.2-rc0") is a
// release older than major.minor; one that does not parse is not.
func releaseBefore(version string, major, minor int) bool {
	var ma, mi int
	if n, _ := fmt.Sscanf(version, "%d.%d", &ma, &mi); n != 2 {
		return false
	}
	return ma < major || (ma == major && mi < minor)
}

// defaultKernel is the kernel Kata boots when the table sets none: its
// build's data directory. The build is guessed from where the
// configuration file lives.
func defaultKernel(configPath string) string {
	if strings.HasPrefix(configPath, "/opt/kata/") {
		return "/opt/kata/share/kata-containers/vmlinuz.container"
	}
	return "/usr/share/kata-containers/vmlinuz.container"
}

// effective fills in what Kata's new<Name>HypervisorConfig derives from a
// table, and fails where it fails, for the keys we use.
func effective(f *File, kind DelegateKind, cacheDefault, name string, h Hypervisor) (Hypervisor, error) {
	table := "hypervisor." + name
	bad := func(key string, v any, reason string, allowed []string) error {
		return &ValueError{File: f.origin(table + "." + key), Table: table, Key: key, Value: v, Reason: reason, Allowed: allowed}
	}
	resolveKey := func(key, v string) (string, error) {
		p, err := resolveIn(f.root, v)
		if err != nil {
			return "", fmt.Errorf("%s: [%s] %s = %q: %w", f.origin(table+"."+key), table, key, v, err)
		}
		return p, nil
	}

	if name == HypervisorRemote {
		// The remote hypervisor boots its guest elsewhere and shares no
		// file system with it.
		h.SharedFS = SharedFSNone
		return h, nil
	}

	kernel := h.Kernel
	if kernel == "" {
		kernel = defaultKernel(f.Path)
	}
	p, err := resolveKey("kernel", kernel)
	if err != nil {
		return Hypervisor{}, err
	}
	h.Kernel = p
	if h.Image != "" {
		if h.Image, err = resolveKey("image", h.Image); err != nil {
			return Hypervisor{}, err
		}
	}
	if h.Initrd != "" && name != HypervisorDragonball {
		if h.Initrd, err = resolveKey("initrd", h.Initrd); err != nil {
			return Hypervisor{}, err
		}
	}

	switch {
	case kind == DelegateRuntimeRS:
		// runtime-rs reads shared_fs for every hypervisor (below).
	case name == HypervisorFirecracker:
		// Kata's Firecracker support has no shared file system: it does
		// not read shared_fs.
		h.SharedFS = ""
		return h, nil
	case name == HypervisorDragonball:
		// Kata's Go runtime ignores shared_fs here; runtime-rs, which
		// drives Dragonball, shares with an inline virtio-fs daemon by
		// default. Assume virtio-fs unless told otherwise.
		if h.SharedFS == "" {
			h.SharedFS = SharedFSVirtioFS
		}
		return h, nil
	}

	allowed := []string{SharedFSVirtio9P, SharedFSVirtioFS, SharedFSVirtioFSNydus, SharedFSNone}
	if name != HypervisorQemu {
		allowed = []string{SharedFSVirtioFS, SharedFSVirtioFSNydus, SharedFSNone}
	}
	if kind == DelegateRuntimeRS {
		// SharedFsInfo::validate, kata-types src/config/hypervisor/mod.rs.
		allowed = []string{SharedFSVirtioFS, SharedFSInlineVirtioFS, SharedFSVirtioFSNydus, SharedFSNone}
	}
	if h.SharedFS == "" {
		h.SharedFS = SharedFSVirtioFS
	} else if !contains(allowed, h.SharedFS) {
		return Hypervisor{}, bad("shared_fs", h.SharedFS, fmt.Sprintf("not supported by %s", name), allowed)
	}
	if (h.SharedFS == SharedFSVirtioFS || h.SharedFS == SharedFSVirtioFSNydus) && h.VirtioFSDaemon == "" {
		return Hypervisor{}, bad("virtio_fs_daemon", "", fmt.Sprintf("shared_fs %s needs a daemon path (Kata refuses this too)", h.SharedFS), nil)
	}
	if h.VirtioFSCache == "" && (name != HypervisorClh || kind == DelegateRuntimeRS) {
		h.VirtioFSCache = cacheDefault
	}
	if kind == DelegateRuntimeRS && (h.SharedFS == SharedFSVirtioFS || h.SharedFS == SharedFSVirtioFSNydus) {
		// runtime-rs runs the canonical path of the daemon, which must
		// exist (SharedFsInfo::adjust_virtio_fs): a symlink to
		// kata-virtiofsd runs kata-virtiofsd.
		if h.VirtioFSDaemon, err = resolveKey("virtio_fs_daemon", h.VirtioFSDaemon); err != nil {
			return Hypervisor{}, err
		}
	}
	return h, nil
}

// IsVirtioFS reports whether the guest mounts its shared directory over
// virtio-fs, the only way the submount bug is reached.
func (h Hypervisor) IsVirtioFS() bool {
	switch h.SharedFS {
	case SharedFSVirtioFS, SharedFSVirtioFSNydus, SharedFSInlineVirtioFS:
		return true
	}
	return false
}
