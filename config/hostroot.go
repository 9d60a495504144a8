package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// maxSymlinkHops is Linux's limit (MAXSYMLINKS) on links followed in one
// lookup.
const maxSymlinkHops = 40

// isHostRoot says whether root is this process's own /.
func isHostRoot(root string) bool { return root == "" || filepath.Clean(root) == "/" }

// resolveIn is resolvePath for a host whose / is mounted at root (see
// Sources.Root): p is a host path, its symlinks are followed as the host
// would follow them (an absolute target is a host path, so a link cannot
// leave root), and the result is a host path that exists.
func resolveIn(root, p string) (string, error) {
	if isHostRoot(root) {
		return resolvePath(p)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s: a host path must be absolute: %w", p, errdefs.ErrInvalidArgument)
	}
	rest := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	cur := "/"
	for hops := 0; len(rest) > 0; {
		part := rest[0]
		rest = rest[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("file %s does not exist on the host (under %s): %w", p, root, errdefs.ErrNotFound)
			}
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}

// EvalSymlinks resolves the symlinks of p, a path of this configuration, as
// the host does: under Root when the configuration was resolved there. The
// result is a host path that exists.
func (r *Resolved) EvalSymlinks(p string) (string, error) {
	if isHostRoot(r.Root) {
		return filepath.EvalSymlinks(p)
	}
	return resolveIn(r.Root, p)
}
