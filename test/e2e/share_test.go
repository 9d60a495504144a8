package e2e

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
)

// hostShare is a cell's share: a tmpfs whose volume directory is another
// tmpfs (the host mount the daemon announces as a submount), and a tree the
// guest walks to fill its dentry cache.
type hostShare struct {
	*harness.Share
	Volume string // name of the volume dir inside Dir
	Marker string // content of <Volume>/marker
	Tree   string // name of the dir walked to fill the guest's dentry cache
}

// treeDirs x treeFiles entries are stat'ed by the guest before pressure.
const (
	treeDirs  = 20
	treeFiles = 100
)

// newHostShare mounts the share under root. Close unmounts it; so does a
// setup failing halfway.
func newHostShare(root, sandboxID, layout string) (s *hostShare, err error) {
	hs, err := harness.NewShareAt(root, sandboxID, layout, "64m")
	if err != nil {
		return nil, err
	}
	s = &hostShare{Share: hs, Volume: "vol", Marker: "volume-" + sandboxID, Tree: "tree"}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	vol := filepath.Join(s.Dir, s.Volume)
	if err := s.MountTmpfs(vol, "64m"); err != nil {
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
