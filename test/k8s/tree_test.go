package k8s

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// tree is a directory's state: each entry's path (relative) → its kind,
// mode and content (a file's sha256, a link's target).
type tree map[string]string

func snapshotTree(t *testing.T, root string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "link -> " + target
		case d.IsDir():
			out[rel] = fmt.Sprintf("dir %v", info.Mode())
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %v %x", info.Mode(), sha256.Sum256(b))
		default:
			out[rel] = fmt.Sprintf("other %v", info.Mode())
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// diff lists what differs between two trees, one line an entry.
func (a tree) diff(b tree) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var lines []string
	for k := range keys {
		if a[k] != b[k] {
			lines = append(lines, fmt.Sprintf("%s: %q -> %q", k, a[k], b[k]))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
