// Command confined is run by the fssandbox tests as "confined MODE DIR": it
// starts itself again as a sandbox child with Spawn and waits for it (the
// child's exit error goes to stderr and exit status 3). The child confines
// itself with Setup, installs the seccomp filter named by
// KSG_TEST_SECCOMP, and prints what it can still do as JSON. Built with
// CGO_ENABLED=0, as the sandbox needs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fssandbox"
)

// Report is what the child found; the tests decode it.
type Report struct {
	Error string `json:"error,omitempty"`
	// Errno of opening each path relative to the /proc/self/fd descriptor
	// for writing ("" when it opened).
	ProcWrite map[string]string `json:"proc_write"`
	// Threads: each thread's NoNewPrivs, Seccomp, CapEff and CapBnd lines.
	Threads []map[string]string `json:"threads"`
	// RootMountOptions: the per-mount options of "/" in mountinfo.
	RootMountOptions string `json:"root_mount_options"`
	// DeviceOpen: errno of opening a null device made in the share.
	DeviceOpen string `json:"device_open"`
	// Forbidden: the errno of a call outside the allow-list, if it returned
	// ("ok": it succeeded).
	Forbidden string `json:"forbidden,omitempty"`
	// UnshareFS: the errno of unshare(CLONE_FS), "" when it succeeded.
	UnshareFS string `json:"unshare_fs"`
}

func errnoString(err error) string {
	if err == nil {
		return ""
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return err.Error()
}

func main() {
	if fssandbox.Stage() == "" {
		os.Exit(parent())
	}
	seccomp := os.Getenv("KSG_TEST_SECCOMP")
	forbidden := os.Getenv("KSG_TEST_FORBIDDEN")
	var r Report
	c, err := fssandbox.Setup()
	if err == nil && seccomp != "" {
		err = fssandbox.RestrictSyscalls(fssandbox.SeccompAction(seccomp))
	}
	if err != nil {
		r.Error = err.Error()
		_ = json.NewEncoder(os.Stdout).Encode(&r)
		os.Exit(1)
	}
	proc := int(c.ProcSelfFD.Fd())
	r.ProcWrite = map[string]string{}
	for _, p := range []string{"../../sys/kernel/core_pattern", "../../sysrq-trigger", "../../sys/vm/drop_caches", "../oom_score_adj"} {
		fd, err := unix.Openat(proc, p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		r.ProcWrite[p] = errnoString(err)
	}
	if f, err := openDirAt(proc, "../task"); err == nil {
		names, _ := f.Readdirnames(-1)
		f.Close()
		for _, n := range names {
			r.Threads = append(r.Threads, statusLines(proc, "../task/"+n+"/status"))
		}
	}
	if b, err := readAt(proc, "../mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 5 && f[4] == "/" {
				r.RootMountOptions = f[5]
			}
		}
	}
	if err := unix.Mknod("/ksg-null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		r.DeviceOpen = "mknod: " + errnoString(err)
	} else {
		fd, err := unix.Open("/ksg-null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		r.DeviceOpen = errnoString(err)
		_ = unix.Unlink("/ksg-null")
	}
	// The xattr fallback's private working directory: unshare(CLONE_FS)
	// on a thread that then ends with its goroutine.
	r.UnshareFS = onOwnThread(func() syscall.Errno {
		_, _, e := unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_FS, 0, 0)
		return e
	})
	switch forbidden {
	case "acct":
		// acct(2) is outside the allow-list and harmless if it runs: the
		// sandbox lacks CAP_SYS_PACCT.
		_, _, e := unix.Syscall(unix.SYS_ACCT, 0, 0, 0)
		r.Forbidden = errnoString(e)
	case "unshare-user":
		// A user namespace would give the thread every capability in it.
		r.Forbidden = onOwnThread(func() syscall.Errno {
			_, _, e := unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0)
			return e
		})
	}
	if forbidden != "" && r.Forbidden == "" {
		r.Forbidden = "ok"
	}
	_ = json.NewEncoder(os.Stdout).Encode(&r)
}

// onOwnThread runs f on a locked OS thread that ends with it, and returns
// its errno as a string ("" for success).
func onOwnThread(f func() syscall.Errno) string {
	done := make(chan syscall.Errno)
	go func() {
		runtime.LockOSThread()
		done <- f()
	}()
	if e := <-done; e != 0 {
		return unix.ErrnoName(e)
	}
	return ""
}

func parent() int {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: confined MODE DIR")
		return 2
	}
	c, err := fssandbox.Spawn(fssandbox.Mode(os.Args[1]), os.Args[2], nil, nil, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "spawn:", err)
		return 2
	}
	if err := c.Wait(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	return 0
}

func openDirAt(dirfd int, p string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

func readAt(dirfd int, p string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil || n == 0 {
			return b, nil
		}
	}
}

func statusLines(dirfd int, p string) map[string]string {
	m := map[string]string{}
	b, err := readAt(dirfd, p)
	if err != nil {
		m["error"] = err.Error()
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"NoNewPrivs", "Seccomp", "CapEff", "CapBnd"} {
			if v, ok := strings.CutPrefix(l, k+":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
	}
	return m
}
