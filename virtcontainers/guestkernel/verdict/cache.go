package verdict

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
)

// The cache keeps the facts of inspected images (never verdicts: those are
// recomputed from the facts and the caller's FixedReleases on every call),
// one small JSON file per image under Options.CacheDir, named after its key:
//
//	v<schema>-<revision hash>-<dev>-<ino>-<size>-<mtime ns>-<ctime ns>-<mode>-<limit>.json
//
// The ctime is in the key because a user can set the mtime back (touch -d)
// after rewriting an image in place with as many bytes, but not the ctime,
// which every write and every change of the times moves. A rewrite within
// the same tick of the kernel's file clock (a few milliseconds) as the
// change before it can still go unseen.
//
// Shims start concurrently and share the directory without locks: a writer
// writes a temporary file in the same directory and renames it into place,
// which is atomic, so a reader sees either no entry or a whole one; two
// writers of one key write the same facts and the last rename wins. An entry
// that does not parse or whose key differs is ignored and rewritten. Entries
// of replaced images are left behind; each is under 2 KiB.

// The build revision (Options.Revision) is in the key too: package
// guestkernel's parsers define the facts, and a build that fixes one must
// not be served what an older build found. Nobody has to remember to bump
// factsSchema for a parser fix.

// factsSchema names the form of a cache entry and of its Key: change it when
// either changes. 2: ctime joined the key; 3: the build revision did.
const factsSchema = 3

// Key identifies an image file as it was when inspected, and how it was
// inspected; a cache entry serves only the same key.
type Key struct {
	Dev        uint64 `json:"dev"`
	Ino        uint64 `json:"ino"`
	Size       int64  `json:"size"`
	MtimeNs    int64  `json:"mtime_ns"`
	CtimeNs    int64  `json:"ctime_ns"`
	HeaderOnly bool   `json:"header_only"`
	Limit      int64  `json:"limit"`
	// Revision is the build that read the image (Options.Revision).
	Revision string `json:"revision"`
}

// KeyOf is the key of the file st describes, inspected with opts.
func KeyOf(st fs.FileInfo, opts Options) Key {
	k := Key{Size: st.Size(), MtimeNs: st.ModTime().UnixNano(), HeaderOnly: opts.HeaderOnly, Limit: opts.Limit(), Revision: opts.revision()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		k.Dev, k.Ino = uint64(sys.Dev), uint64(sys.Ino)
		k.CtimeNs = sys.Ctim.Nano()
	}
	return k
}

func (k Key) name() string {
	mode := "full"
	if k.HeaderOnly {
		mode = "header"
	}
	// The revision is any string: its hash keeps the name short and safe,
	// and Load compares the whole Key.
	rev := fnv.New32a()
	rev.Write([]byte(k.Revision))
	return fmt.Sprintf("v%d-%08x-%x-%x-%x-%x-%x-%s-%x.json", factsSchema, rev.Sum32(), k.Dev, k.Ino, k.Size, k.MtimeNs, k.CtimeNs, mode, k.Limit)
}

type cacheEntry struct {
	Schema int     `json:"schema"`
	Key    Key     `json:"key"`
	Facts  *Report `json:"facts"`
}

// Cache is a directory of facts by Key; a zero Dir caches nothing.
type Cache struct{ Dir string }

// Load returns the facts stored for key (a Report without path and
// verdict), or false.
func (c Cache) Load(ctx context.Context, key Key) (*Report, bool) {
	if c.Dir == "" || key.Ino == 0 {
		return nil, false
	}
	b, err := readSmall(filepath.Join(c.Dir, key.name()))
	if err != nil {
		return nil, false
	}
	var e cacheEntry
	if err := json.Unmarshal(b, &e); err != nil || e.Schema != factsSchema || e.Key != key || e.Facts == nil {
		log.G(ctx).WithField("entry", key.name()).Debug("ignoring unusable guest kernel cache entry")
		return nil, false
	}
	return e.Facts, true
}

// Store writes the facts of rep (not its path or verdict) for key. Failures
// only cost a later re-read, so they are logged, not returned.
func (c Cache) Store(ctx context.Context, key Key, rep *Report) {
	if c.Dir == "" || key.Ino == 0 {
		return
	}
	facts := rep.Facts()
	b, err := json.Marshal(cacheEntry{Schema: factsSchema, Key: key, Facts: &facts})
	if err == nil {
		err = writeAtomic(c.Dir, key.name(), b)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("dir", c.Dir).Warn("cannot write guest kernel cache entry")
	}
}

// maxEntry bounds a cache entry; real ones are under 2 KiB.
const maxEntry = 64 << 10

// readSmall reads a cache entry with one read in the common case (no fstat
// as os.ReadFile does: a hit is a few syscalls).
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 0, 4096)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF || n == 0 && err == nil {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
		if len(b) == cap(b) {
			if len(b) >= maxEntry {
				return nil, fmt.Errorf("cache entry %s larger than %d bytes", path, maxEntry)
			}
			b = append(b, make([]byte, len(b))...)[:len(b)]
		}
	}
}

func writeAtomic(dir, name string, b []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name), b, 0o644)
}
