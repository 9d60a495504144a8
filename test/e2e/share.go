package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// hostShare is a sandbox's shared directory laid out as Kata lays it out
// (<root>/sandboxes/<id>/shared), a tmpfs whose volume directory is another
// tmpfs: the host mount the daemon announces as a submount.
type hostShare struct {
	SandboxID string
	Dir       string // the shared dir Kata passes as --shared-dir
	Volume    string // name of the volume dir inside Dir
	Marker    string // content of <Volume>/marker
	Tree      string // name of the dir walked to fill the guest's dentry cache
	mounts    []string
}

// treeDirs x treeFiles entries are stat'ed by the guest before pressure.
const (
	treeDirs  = 20
	treeFiles = 100
)

// newHostShare mounts the share under root. close unmounts it even when
// setup failed halfway.
func newHostShare(root, sandboxID string) (s *hostShare, err error) {
	s = &hostShare{
		SandboxID: sandboxID,
		Dir:       filepath.Join(root, "sandboxes", sandboxID, "shared"),
		Volume:    "vol",
		Marker:    "volume-" + sandboxID,
		Tree:      "tree",
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.mountTmpfs(s.Dir); err != nil {
		return nil, err
	}
	vol := filepath.Join(s.Dir, s.Volume)
	if err := s.mountTmpfs(vol); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(vol, "marker"), []byte(s.Marker), 0o644); err != nil {
		return nil, err
	}
	for d := 0; d < treeDirs; d++ {
		dir := filepath.Join(s.Dir, s.Tree, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		for f := 0; f < treeFiles; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), nil, 0o644); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *hostShare) mountTmpfs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	s.mounts = append(s.mounts, dir)
	return nil
}

// close unmounts in reverse order; lazily, so a daemon still holding fds
// cannot leave a mount behind.
func (s *hostShare) close() error {
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
