package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/internal/oserr"
)

// checkDelegate makes sure path is an executable file other than this
// binary, so that a bad delegate_shim fails start with a clear error instead
// of a failed (or endlessly repeated) exec. configPath is the file that set
// it; "" means the default delegate_shim, no configuration file being found.
func checkDelegate(path, configPath string) error {
	where := fmt.Sprintf("[submount_guard] delegate_shim = %q in %s", path, configPath)
	if configPath == "" {
		where = "the default delegate_shim, as no Kata configuration file was found"
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s is not an absolute path; set it to the full path of Kata's upstream containerd-shim-kata-v2: %w", where, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("delegate shim %s (%s) cannot be used: %w; install Kata's upstream containerd-shim-kata-v2 there or point delegate_shim at it: %w",
			path, where, oserr.Cause(err), errdefs.ErrNotFound)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("delegate shim %s (%s) is not a regular file; point delegate_shim at Kata's upstream containerd-shim-kata-v2: %w", path, where, errdefs.ErrFailedPrecondition)
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("delegate shim %s (%s) is not executable (mode %v); chmod +x it or point delegate_shim at Kata's upstream containerd-shim-kata-v2: %w",
			path, where, fi.Mode().Perm(), errdefs.ErrFailedPrecondition)
	}
	if self, err := os.Stat("/proc/self/exe"); err == nil && os.SameFile(self, fi) {
		return fmt.Errorf("delegate shim %s (%s) is this guard shim itself; point delegate_shim at Kata's upstream containerd-shim-kata-v2: %w", path, where, errdefs.ErrInvalidArgument)
	}
	return nil
}

// feedStdin makes data the whole of fd 0 again, from its start, for the
// program we are about to exec. We consumed the original stdin (a pipe that
// containerd fills) to read the runtime options. A memfd holds any size and
// needs no writer: a pipe would need a process of ours to keep writing once
// its buffer is full, which is exactly what must not stay behind. The memfd
// is the new fd 0 with its offset at 0; io.ReadAll over it sees the same
// bytes, then EOF. Empty data leaves fd 0 as it was (at EOF already).
func feedStdin(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	fd, err := unix.MemfdCreate("kata-shim-runtime-options", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd for runtime options: %w", err)
	}
	defer unix.Close(fd)
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			return fmt.Errorf("memfd for runtime options: %w", err)
		}
		rest = rest[n:]
	}
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return fmt.Errorf("memfd for runtime options: %w", err)
	}
	// dup3 without O_CLOEXEC: fd 0 survives the exec.
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("memfd as stdin: %w", err)
	}
	return nil
}

// execve replaces this process with the delegate.
func execve(path string, argv, env []string) error {
	if err := syscall.Exec(path, argv, env); err != nil {
		return fmt.Errorf("exec delegate shim %s: %w", path, err)
	}
	return nil
}
