// Command guestinit is PID 1 of every VM test's guest. The kernel command
// line (package guest's keys) names its mode: the truth table's scenario
// (one guest.Result line), or, for the daemon tests, a smoke run, the
// benchmark's workloads or the POSIX suite against the virtio-fs share (check,
// bench and POSIX lines, then guest.DoneLine). It powers the guest off at the
// end and never returns.
//
// The same binary is re-executed as the scenario's container
// (`/init container ...`) and memory hog (`/init hog`).
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
)

// shareMount is where every mode mounts the virtio-fs share.
const shareMount = "/share"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "container":
			os.Exit(container(os.Args[2:]))
		case "hog":
			hog()
			return
		}
	}
	setupErr := mountBasics()
	params := map[string]string{}
	if setupErr == nil {
		params, setupErr = cmdline()
	}
	if params[guest.KeyHang] == "1" {
		fmt.Fprintln(os.Stderr, guest.HangLine)
		hang()
	}
	switch mode := guest.Mode(params[guest.KeyMode]); mode {
	case "", guest.ModeScenario:
		fmt.Fprintln(os.Stdout, agent(params, setupErr).Line())
	default:
		runChecks(mode, params, setupErr)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintln(os.Stderr, "guestinit: poweroff:", err)
	}
	// PID 1 must not return: the kernel would panic over it.
	hang()
}

// runChecks runs the smoke, bench or POSIX mode: the share mounted at
// shareMount, one line per result, DoneLine last whatever happened.
func runChecks(mode guest.Mode, params map[string]string, setupErr error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("%sinit FAIL panic: %v\n", guest.CheckPrefix, r)
		}
		fmt.Println(guest.DoneLine)
	}()
	if setupErr != nil {
		check("init", setupErr)
		return
	}
	if err := os.MkdirAll(shareMount, 0o755); err != nil {
		check("mount", err)
		return
	}
	if err := unix.Mount(params[guest.KeyTag], shareMount, "virtiofs", 0, ""); err != nil {
		check("mount", fmt.Errorf("mount virtiofs %q: %w", params[guest.KeyTag], err))
		return
	}
	check("mount", nil)
	switch mode {
	case guest.ModeSmoke:
		smoke()
	case guest.ModeBench:
		bench()
	case guest.ModePOSIX:
		posixSuite(params)
	default:
		check("mode", fmt.Errorf("unknown mode %q", mode))
	}
	_ = unix.Unmount(shareMount, 0)
}

// check prints a smoke check's line.
func check(name string, err error) {
	if err != nil {
		fmt.Printf("%s%s FAIL %v\n", guest.CheckPrefix, name, err)
		return
	}
	fmt.Printf("%s%s %s\n", guest.CheckPrefix, name, guest.CheckOK)
}

// hang blocks forever. Not `select {}`: with no other goroutine the Go
// runtime calls that a deadlock and exits.
func hang() {
	for {
		_ = unix.Pause()
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "KSG-LOG "+format+"\n", args...)
}

func mountBasics() error {
	for _, m := range []struct{ fstype, dir string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	return nil
}

// cmdline returns the ksg.* keys of the kernel command line.
func cmdline() (map[string]string, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	params := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "ksg.") {
			params[k] = v
		}
	}
	return params, nil
}
