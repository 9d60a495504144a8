package hostcheck

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// InfoOptions name the files Gather reads; zero values are the real ones.
type InfoOptions struct {
	ProcCPUInfo   string // /proc/cpuinfo
	ProcOSRelease string // /proc/sys/kernel/osrelease
	ProcMeminfo   string // /proc/meminfo
	OSRelease     string // /etc/os-release, falling back to /usr/lib/os-release
	VhostVsock    string // /dev/vhost-vsock
}

// Info is what kata-runtime env reports about the host (Kata's HostInfo).
type Info struct {
	Kernel        string
	Architecture  string
	DistroName    string
	DistroVersion string
	CPUVendor     string
	CPUModel      string
	CPUs          int
	// Memory in KiB, as /proc/meminfo gives it.
	MemTotal, MemFree, MemAvailable uint64
	SupportVSocks                   bool
}

// Gather collects Info. Facts that cannot be read stay empty; the error
// lists what was missing so the caller can say so.
func Gather(opts InfoOptions) (Info, error) {
	if opts.ProcCPUInfo == "" {
		opts.ProcCPUInfo = "/proc/cpuinfo"
	}
	if opts.ProcOSRelease == "" {
		opts.ProcOSRelease = "/proc/sys/kernel/osrelease"
	}
	if opts.ProcMeminfo == "" {
		opts.ProcMeminfo = "/proc/meminfo"
	}
	if opts.VhostVsock == "" {
		opts.VhostVsock = "/dev/vhost-vsock"
	}
	info := Info{Architecture: runtime.GOARCH, CPUs: runtime.NumCPU()}
	var missing []string
	if b, err := os.ReadFile(opts.ProcOSRelease); err == nil {
		info.Kernel = strings.TrimSpace(string(b))
	} else {
		missing = append(missing, err.Error())
	}
	osRelease := []string{opts.OSRelease}
	if opts.OSRelease == "" {
		osRelease = []string{"/etc/os-release", "/usr/lib/os-release"}
	}
	found := false
	for _, p := range osRelease {
		if kv, err := readKeyValues(p, "="); err == nil {
			info.DistroName, info.DistroVersion = unquote(kv["NAME"]), unquote(kv["VERSION_ID"])
			found = true
			break
		}
	}
	if !found {
		missing = append(missing, "no os-release file in "+strings.Join(osRelease, ", "))
	}
	if cpu, err := firstCPU(opts.ProcCPUInfo); err == nil {
		info.CPUVendor, info.CPUModel = field(cpu, "vendor_id"), field(cpu, "model name")
	} else {
		missing = append(missing, err.Error())
	}
	if kv, err := readKeyValues(opts.ProcMeminfo, ":"); err == nil {
		info.MemTotal, info.MemFree, info.MemAvailable = kib(kv["MemTotal"]), kib(kv["MemFree"]), kib(kv["MemAvailable"])
	} else {
		missing = append(missing, err.Error())
	}
	_, err := os.Stat(opts.VhostVsock)
	info.SupportVSocks = err == nil
	if len(missing) > 0 {
		return info, fmt.Errorf("host facts incomplete: %s", strings.Join(missing, "; "))
	}
	return info, nil
}

func readKeyValues(path, sep string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), sep); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kv, s.Err()
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return strings.Trim(s, `'"`)
}

func kib(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(s, "kB")), 10, 64)
	return n
}
