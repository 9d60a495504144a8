package verdict

import "github.com/kata-submount-guard/kata-submount-guard/internal/buildinfo"

// DefaultMaxDecompressed caps how many bytes a compressed kernel payload may
// expand to when Options.MaxDecompressed is zero.
const DefaultMaxDecompressed int64 = 256 << 20

// Options tune an inspection. Those that change what a read finds are part
// of the cache Key.
type Options struct {
	// FixedReleases are exact releases (`uname -r`) the operator knows to
	// carry the fix (config key fixed_releases). They outrank the version
	// string but not BTF.
	FixedReleases []string
	// CacheDir holds inspection results keyed by (device, inode, size,
	// mtime, ctime); "" disables the cache. See cache.go for the layout.
	CacheDir string
	// MaxDecompressed caps the decompressed size of a payload, and the size
	// of a compressed input; 0 means DefaultMaxDecompressed.
	MaxDecompressed int64
	// HeaderOnly reads only what an image stores uncompressed: a bzImage's
	// setup header, an ELF's sections, a raw Image. Compressed payloads are
	// not decompressed, so they give no BTF (and zboot images no version).
	HeaderOnly bool
	// Revision is the build revision of the parsers that inspect the image,
	// part of the cache Key; "" means this binary's (buildinfo.Revision).
	// The shim and the kata-runtime it runs on a miss are one build, so
	// they agree; tests set it to show that another build misses.
	Revision string
}

func (o Options) revision() string {
	if o.Revision != "" {
		return o.Revision
	}
	return buildinfo.Revision()
}

// Limit is the decompression budget: MaxDecompressed or its default.
func (o Options) Limit() int64 {
	if o.MaxDecompressed > 0 {
		return o.MaxDecompressed
	}
	return DefaultMaxDecompressed
}
