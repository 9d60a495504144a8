package config

// Source names what chose the configuration file.
type Source string

const (
	// SourceAnnotation: the bundle's io.katacontainers.config_path annotation.
	SourceAnnotation Source = "annotation"
	// SourceRuntimeOptions: containerd's runtime options (ConfigPath).
	SourceRuntimeOptions Source = "runtime-options"
	// SourceEnv: the KATA_CONF_FILE environment variable.
	SourceEnv Source = "env"
	// SourceFlag: kata-runtime's global --config/--kata-config flag.
	SourceFlag Source = "flag"
	// SourceDefault: the first default path that exists.
	SourceDefault Source = "default"
)

// Hypervisor table names Kata's Go runtime accepts under [hypervisor.<name>].
// Any other name makes Kata fail ("configuration file contains invalid
// hypervisor section"), and so do we.
const (
	HypervisorQemu        = "qemu"
	HypervisorClh         = "clh"
	HypervisorFirecracker = "firecracker"
	HypervisorDragonball  = "dragonball"
	HypervisorStratovirt  = "stratovirt"
	HypervisorRemote      = "remote"
)

// hypervisorNames lists the accepted hypervisor table names.
func hypervisorNames() []string {
	return []string{HypervisorQemu, HypervisorClh, HypervisorFirecracker, HypervisorDragonball, HypervisorStratovirt, HypervisorRemote}
}

// Shared file system kinds (Kata's shared_fs values).
const (
	SharedFSVirtioFS      = "virtio-fs"
	SharedFSVirtio9P      = "virtio-9p"
	SharedFSVirtioFSNydus = "virtio-fs-nydus"
	SharedFSNone          = "none"
	// SharedFSInlineVirtioFS is runtime-rs's virtio-fs served inside
	// Dragonball's VMM, without a virtiofsd process.
	SharedFSInlineVirtioFS = "inline-virtio-fs"
)

// Hypervisor holds the keys of one [hypervisor.<name>] table that we use.
// Keys we do not model are left to Kata. Field types follow Kata's, so a
// value of the wrong type is an error here as it is in Kata.
type Hypervisor struct {
	Path                     string   `toml:"path" json:"path"`
	Kernel                   string   `toml:"kernel" json:"kernel"`
	Image                    string   `toml:"image" json:"image"`
	Initrd                   string   `toml:"initrd" json:"initrd"`
	KernelParams             string   `toml:"kernel_params" json:"kernel_params"`
	MachineType              string   `toml:"machine_type" json:"machine_type"`
	BlockDeviceDriver        string   `toml:"block_device_driver" json:"block_device_driver"`
	EntropySource            string   `toml:"entropy_source" json:"entropy_source"`
	SharedFS                 string   `toml:"shared_fs" json:"shared_fs"`
	VirtioFSDaemon           string   `toml:"virtio_fs_daemon" json:"virtio_fs_daemon"`
	ValidVirtioFSDaemonPaths []string `toml:"valid_virtio_fs_daemon_paths" json:"valid_virtio_fs_daemon_paths"`
	VirtioFSExtraArgs        []string `toml:"virtio_fs_extra_args" json:"virtio_fs_extra_args"`
	VirtioFSCache            string   `toml:"virtio_fs_cache" json:"virtio_fs_cache"`
	EnableAnnotations        []string `toml:"enable_annotations" json:"enable_annotations"`
	GuestHookPath            string   `toml:"guest_hook_path" json:"guest_hook_path"`
	Msize9p                  uint32   `toml:"msize_9p" json:"msize_9p"`
	MemorySlots              uint32   `toml:"memory_slots" json:"memory_slots"`
	Debug                    bool     `toml:"enable_debug" json:"enable_debug"`
	Rootless                 bool     `toml:"rootless" json:"rootless"`
	DisableSeccomp           bool     `toml:"disable_seccomp" json:"disable_seccomp"`
	ConfidentialGuest        bool     `toml:"confidential_guest" json:"confidential_guest"`
}

// Agent holds the keys of one [agent.<name>] table that we report.
type Agent struct {
	Debug   bool `toml:"enable_debug" json:"enable_debug"`
	Tracing bool `toml:"enable_tracing" json:"enable_tracing"`
}

// Runtime holds the keys of [runtime] that we report.
type Runtime struct {
	Debug               bool   `toml:"enable_debug" json:"enable_debug"`
	Tracing             bool   `toml:"enable_tracing" json:"enable_tracing"`
	DisableNewNetNs     bool   `toml:"disable_new_netns" json:"disable_new_netns"`
	SandboxCgroupOnly   bool   `toml:"sandbox_cgroup_only" json:"sandbox_cgroup_only"`
	DisableGuestSeccomp bool   `toml:"disable_guest_seccomp" json:"disable_guest_seccomp"`
	GuestSeLinuxLabel   string `toml:"guest_selinux_label" json:"guest_selinux_label"`
	// HypervisorName is runtime-rs's choice of [hypervisor.<name>] table;
	// Kata's Go runtime does not read it.
	HypervisorName string `toml:"hypervisor_name" json:"hypervisor_name"`
}
