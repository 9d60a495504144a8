package hostcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Options name the host files the checks read; zero values are the real ones.
type Options struct {
	ProcCPUInfo  string // /proc/cpuinfo
	ProcModules  string // /proc/modules: absent when the kernel cannot load modules
	SysModuleDir string // /sys/module
	KVMDevice    string // /dev/kvm
	// Modprobe loads a module that is not loaded; "" means "modprobe".
	// Kata runs it as root only.
	Modprobe string
	// NoModprobe never loads modules (Kata always tries as root).
	NoModprobe bool
	// Hypervisor is the active hypervisor table; "remote" needs no KVM.
	Hypervisor string
}

func (o Options) withDefaults() Options {
	if o.ProcCPUInfo == "" {
		o.ProcCPUInfo = "/proc/cpuinfo"
	}
	if o.ProcModules == "" {
		o.ProcModules = "/proc/modules"
	}
	if o.SysModuleDir == "" {
		o.SysModuleDir = "/sys/module"
	}
	if o.KVMDevice == "" {
		o.KVMDevice = "/dev/kvm"
	}
	if o.Modprobe == "" {
		o.Modprobe = "modprobe"
	}
	return o
}

// Kind is what a check looks at; the words are Kata's log "type" field.
type Kind string

const (
	KindAttribute Kind = "attribute"
	KindFlag      Kind = "flag"
	KindModule    Kind = "module"
	KindDevice    Kind = "device"
)

// Check is one host property.
type Check struct {
	Kind        Kind   `json:"type"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Required checks make the host incapable when they fail.
	Required bool `json:"required"`
	OK       bool `json:"ok"`
	// Detail says what was found, or why it is missing and what to do.
	Detail string `json:"detail,omitempty"`
}

// Result is the outcome of Run.
type Result struct {
	CPUVendor string  `json:"cpu_vendor"`
	CPUModel  string  `json:"cpu_model"`
	OnVMM     bool    `json:"on_vmm"`
	Checks    []Check `json:"checks"`
	// Capable is Kata's "System is capable of running Kata Containers":
	// every required CPU and module check passed.
	Capable bool `json:"capable"`
	// KVM is the /dev/kvm check (Kata's "System can currently create
	// Kata Containers"); nil for the remote hypervisor.
	KVM *Check `json:"kvm,omitempty"`
}

// Failed returns the failed checks, required or not.
func (r *Result) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

const (
	vendorIntel = "GenuineIntel"
	vendorAMD   = "AuthenticAMD"
)

// Run performs the checks. It fails only when /proc/cpuinfo cannot be read at
// all; everything else is a finding.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	cpu, err := firstCPU(opts.ProcCPUInfo)
	if err != nil {
		return nil, err
	}
	res := &Result{CPUVendor: field(cpu, "vendor_id"), CPUModel: field(cpu, "model name")}
	flags := field(cpu, "flags")
	res.OnVMM = anchored(flags, "hypervisor")

	var virt, kvmVendor, vendorDesc, kvmDesc string
	switch {
	case strings.Contains(cpu, vendorIntel):
		virt, kvmVendor, vendorDesc, kvmDesc = "vmx", "kvm_intel", vendorIntel, "Intel KVM"
	case strings.Contains(cpu, vendorAMD):
		virt, kvmVendor, vendorDesc, kvmDesc = "svm", "kvm_amd", vendorAMD, "AMD KVM"
	}
	if virt == "" {
		res.Checks = append(res.Checks, Check{Kind: KindAttribute, Name: "GenuineIntel|AuthenticAMD", Description: "x86 CPU vendor", Required: true,
			Detail: fmt.Sprintf("unknown CPU vendor %q in %s: Kata supports Intel and AMD CPUs here", res.CPUVendor, opts.ProcCPUInfo)})
		return res, nil
	}
	archDesc := "Intel Architecture CPU"
	if virt == "svm" {
		archDesc = "AMD Architecture CPU"
	}
	res.Checks = append(res.Checks, cpuCheck(KindAttribute, cpu, vendorDesc, archDesc, opts.ProcCPUInfo))
	for _, f := range []struct{ name, desc string }{{virt, "Virtualization support"}, {"lm", "64Bit CPU"}, {"sse4_1", "SSE4.1"}} {
		c := cpuCheck(KindFlag, flags, f.name, f.desc, opts.ProcCPUInfo)
		if !c.OK && f.name == virt && res.OnVMM {
			c.Detail += "; this host is itself a virtual machine: enable nested virtualization on its hypervisor"
		}
		res.Checks = append(res.Checks, c)
	}

	_, statErr := os.Stat(opts.ProcModules)
	canLoad := statErr == nil
	for _, m := range []struct {
		name, desc string
		required   bool
	}{
		{"kvm", "Kernel-based Virtual Machine", true},
		{kvmVendor, kvmDesc, true},
		{"vhost", "Host kernel accelerator for virtio", true},
		{"vhost_net", "Host kernel accelerator for virtio network", true},
		{"vhost_vsock", "Host Support for Linux VM Sockets", false},
	} {
		res.Checks = append(res.Checks, moduleCheck(ctx, opts, m.name, m.desc, m.required, canLoad))
	}

	res.Capable = true
	for _, c := range res.Checks {
		if c.Required && !c.OK {
			res.Capable = false
		}
	}
	if opts.Hypervisor != "remote" {
		kvm := kvmCheck(opts.KVMDevice)
		res.KVM = &kvm
	}
	return res, nil
}

// firstCPU returns the first processor block of cpuinfo, as Kata reads it.
func firstCPU(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read CPU details: %w", err)
	}
	block, _, _ := strings.Cut(string(data), "\n\n")
	block = strings.TrimSpace(block)
	if block == "" {
		return "", fmt.Errorf("read CPU details: %s is empty", path)
	}
	return block, nil
}

// field returns the value of "name<tabs>: value" in a cpuinfo block.
func field(block, name string) string {
	for _, line := range strings.Split(block, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// anchored is Kata's findAnchoredString: needle as a whole word.
func anchored(haystack, needle string) bool {
	if haystack == "" || needle == "" {
		return false
	}
	return regexp.MustCompile(`\b` + regexp.QuoteMeta(needle) + `\b`).MatchString(haystack)
}

func cpuCheck(kind Kind, haystack, name, desc, file string) Check {
	c := Check{Kind: kind, Name: name, Description: desc, Required: true, OK: anchored(haystack, name)}
	if !c.OK {
		where := "the CPU flags"
		if kind == KindAttribute {
			where = "the CPU details"
		}
		c.Detail = fmt.Sprintf("%s not in %s of %s", name, where, file)
	}
	return c
}

func moduleCheck(ctx context.Context, opts Options, name, desc string, required, canLoad bool) Check {
	c := Check{Kind: KindModule, Name: name, Description: desc, Required: required}
	dir := filepath.Join(opts.SysModuleDir, name)
	if _, err := os.Stat(dir); err == nil {
		c.OK = true
		c.Detail = dir
		return c
	}
	switch {
	case !canLoad:
		c.Detail = fmt.Sprintf("not built in (no %s) and this kernel cannot load modules (no %s)", dir, opts.ProcModules)
	case os.Geteuid() != 0:
		c.Detail = fmt.Sprintf("not loaded (no %s); only root can load it: run as root", dir)
	case opts.NoModprobe:
		c.Detail = fmt.Sprintf("not loaded (no %s)", dir)
	default:
		out, err := exec.CommandContext(ctx, opts.Modprobe, name).CombinedOutput()
		if err == nil {
			c.OK = true
			c.Detail = "loaded with " + opts.Modprobe
			log.G(ctx).WithField("module", name).Info("loaded kernel module")
			return c
		}
		c.Detail = fmt.Sprintf("not loaded (no %s) and %s %s failed: %v: %s", dir, opts.Modprobe, name, err, bytes.TrimSpace(out))
	}
	return c
}

// kvmIoctlCreateVM is KVM_CREATE_VM, _IO(KVMIO=0xAE, 0x01).
const kvmIoctlCreateVM = 0xAE01

// kvmCheck opens the KVM device and creates (and drops) a VM, as Kata's
// genericKvmIsUsable does.
func kvmCheck(dev string) Check {
	c := Check{Kind: KindDevice, Name: dev, Description: "KVM can create a virtual machine", Required: true}
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			c.Detail = fmt.Sprintf("%s does not exist: load kvm and kvm_intel or kvm_amd", dev)
		case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
			c.Detail = fmt.Sprintf("cannot open %s: %v (run as root or join its group)", dev, err)
		default:
			c.Detail = fmt.Sprintf("cannot open %s: %v", dev, err)
		}
		return c
	}
	defer unix.Close(fd)
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmIoctlCreateVM, 0)
	if errno != 0 {
		c.Detail = fmt.Sprintf("KVM_CREATE_VM on %s failed: %v", dev, errno)
		if errno == unix.EBUSY {
			c.Detail += " (another hypervisor is running)"
		}
		return c
	}
	unix.Close(int(vm))
	c.OK = true
	c.Detail = "created a test VM"
	return c
}
