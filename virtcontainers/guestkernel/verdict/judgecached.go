package verdict

import (
	"context"
	"os"
)

// JudgeCached judges the image at path from the facts opts.CacheDir holds for it,
// without reading the image. It returns false when the cache cannot answer:
// no such entry, no cache directory, or a path that is not a regular,
// non-empty file (whose error is the inspector's to report). A returned
// Report is what inspecting the image would return.
func JudgeCached(ctx context.Context, path string, opts Options) (*Report, bool) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return nil, false
	}
	rep, ok := Cache{Dir: opts.CacheDir}.Load(ctx, KeyOf(st, opts))
	if !ok {
		return nil, false
	}
	rep.Path = path
	Judge(rep, opts.FixedReleases)
	return rep, true
}
