// Package hostcheck runs Kata Containers' host checks (kata-runtime check,
// Kata 3.x cmd/kata-runtime/kata-check*.go) on x86_64: the CPU vendor, the
// CPU flags vmx or svm, lm and sse4_1 from /proc/cpuinfo; the kernel modules
// kvm, kvm_intel or kvm_amd, vhost, vhost_net (required) and vhost_vsock
// (optional) under /sys/module, loading them with modprobe as root when the
// kernel can load modules; and whether /dev/kvm can create a VM
// (KVM_CREATE_VM). It also gathers the host facts kata-runtime env reports.
// It returns findings and never prints; a missing file is a finding, not a
// crash.
package hostcheck
