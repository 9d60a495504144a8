package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Share is a sandbox's shared directory laid out as Kata lays it out,
// <root>/sandboxes/<id>/shared, with the host mounts made for it.
type Share struct {
	SandboxID string
	Dir       string // the shared dir Kata passes as --shared-dir
	mounts    []string
}

// NewShare makes the shared directory under root: a tmpfs of tmpfsSize
// (e.g. "64m"), as Kata's /run is, or a plain directory of root's
// filesystem if tmpfsSize is "". Close unmounts whatever was mounted.
func NewShare(root, sandboxID, tmpfsSize string) (*Share, error) {
	return NewShareAt(root, sandboxID, LayoutGo, tmpfsSize)
}

// Share layouts: the last element of the shared dir.
const (
	LayoutGo        = "shared" // Kata's Go runtime: sandboxes/<id>/shared
	LayoutRuntimeRS = "ro"     // runtime-rs: sandboxes/<id>/ro
)

// NewShareAt is NewShare with the shared dir at <root>/sandboxes/<id>/<layout>.
func NewShareAt(root, sandboxID, layout, tmpfsSize string) (*Share, error) {
	s := &Share{SandboxID: sandboxID, Dir: filepath.Join(root, "sandboxes", sandboxID, layout)}
	if tmpfsSize == "" {
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return nil, err
		}
		// Other users in the guest must reach it, whatever root's mode.
		return s, os.Chmod(s.Dir, 0o755)
	}
	if err := s.MountTmpfs(s.Dir, tmpfsSize); err != nil {
		return nil, err
	}
	return s, nil
}

// Outside is the directory holding the shared directory: the host files a
// guest must never reach.
func (s *Share) Outside() string { return filepath.Dir(s.Dir) }

// MountTmpfs mounts a tmpfs of size on dir (made if missing), e.g. a volume
// inside the share: a host mount the daemon announces as a submount.
func (s *Share) MountTmpfs(dir, size string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	s.mounts = append(s.mounts, dir)
	return nil
}

// Close unmounts in reverse order; lazily, so a daemon still holding fds
// cannot leave a mount behind.
func (s *Share) Close() error {
	var errs []string
	for i := len(s.mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(s.mounts[i], unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Sprintf("umount %s: %v", s.mounts[i], err))
		}
	}
	s.mounts = nil
	if errs != nil {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
