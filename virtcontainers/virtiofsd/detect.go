package virtiofsd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
)

// Flavour is the implementation family of a virtiofsd binary.
type Flavour string

const (
	// FlavourRust is the Rust virtiofsd (gitlab.com/virtio-fs/virtiofsd).
	FlavourRust Flavour = "rust"
	// FlavourC is QEMU's C virtiofsd (tools/virtiofsd, QEMU 5.0 to 7.2).
	FlavourC Flavour = "qemu-c"
)

// Daemon is an upstream virtiofsd binary as detected.
type Daemon struct {
	Path    string  `json:"path"`
	Flavour Flavour `json:"flavour"`
	// Version is the daemon's own version (Rust: "1.13.2"; C: QEMU's, "7.2.22").
	Version string `json:"version"`
	// Options are those its --help lists: long options ("--no-announce-submounts")
	// and, for the C daemon, -o names ("announce_submounts", "killpriv_v2").
	Options []string `json:"options"`
}

// Supports reports whether the daemon's --help lists opt.
func (d Daemon) Supports(opt string) bool {
	_, found := slices.BinarySearch(d.Options, opt)
	return found
}

func (d Daemon) String() string {
	if d.Flavour == FlavourC {
		return fmt.Sprintf("QEMU's C virtiofsd %s at %s", d.Version, d.Path)
	}
	return fmt.Sprintf("Rust virtiofsd %s at %s", d.Version, d.Path)
}

// maxProbeOutput caps what is read from --version and --help.
const maxProbeOutput = 1 << 20

// probeTimeout bounds each --version / --help run.
const probeTimeout = 10 * time.Second

var (
	rustVersionRE = regexp.MustCompile(`^virtiofsd (\d+\.\d+\.\d+\S*)\s*$`)
	cVersionRE    = regexp.MustCompile(`^virtiofsd version (\d+\.\d+\.\d+)\S*`)
	longOptionRE  = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z],?\s+)?(--[a-z0-9][a-z0-9-]*)`)
	cCompatRE     = regexp.MustCompile(`(?m)^\s+-o ([a-z0-9_]+(?:[|/][a-z0-9_]+)*)`)
)

// parseVersion tells the flavour and version from a daemon's --version
// output. It returns an error wrapping errdefs.ErrNotImplemented for output
// of neither flavour.
func parseVersion(out []byte) (Flavour, string, error) {
	first, rest, _ := bytes.Cut(out, []byte("\n"))
	first = bytes.TrimSpace(first)
	if m := rustVersionRE.FindSubmatch(first); m != nil && len(bytes.TrimSpace(rest)) == 0 {
		return FlavourRust, string(m[1]), nil
	}
	// QEMU prints its version, copyright and the FUSE interface version.
	if m := cVersionRE.FindSubmatch(first); m != nil && bytes.Contains(rest, []byte("FUSE kernel interface")) {
		return FlavourC, string(m[1]), nil
	}
	return "", "", fmt.Errorf("--version printed %q, which is neither the Rust virtiofsd's "+
		"\"virtiofsd X.Y.Z\" nor QEMU's \"virtiofsd version X.Y.Z ... FUSE kernel interface\": %w",
		truncate(out, 200), errdefs.ErrNotImplemented)
}

// parseHelp lists the options a daemon's --help output names, sorted.
func parseHelp(f Flavour, out []byte) []string {
	seen := map[string]bool{}
	for _, m := range longOptionRE.FindAllSubmatch(out, -1) {
		seen[string(m[1])] = true
	}
	if f == FlavourC {
		for _, m := range cCompatRE.FindAllSubmatch(out, -1) {
			for _, name := range strings.FieldsFunc(string(m[1]), func(r rune) bool { return r == '|' || r == '/' }) {
				seen[name] = true
			}
		}
	}
	opts := make([]string, 0, len(seen))
	for k := range seen {
		opts = append(opts, k)
	}
	slices.Sort(opts)
	return opts
}

func truncate(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Detect tells the flavour of the virtiofsd at path by running it with
// --version and --help. With a cacheDir, the answer is kept there per binary,
// keyed by its path, inode, size and change times, so a sandbox start costs
// no extra process once the binary is known; a cacheDir that cannot be
// written is skipped. Errors wrap errdefs.ErrNotFound for a missing binary,
// ErrInvalidArgument for one that is not an executable file, and
// ErrNotImplemented for one of an unknown flavour.
func Detect(ctx context.Context, path, cacheDir string) (Daemon, error) {
	if !filepath.IsAbs(path) {
		return Daemon{}, fmt.Errorf("upstream virtiofsd %q: not an absolute path: %w", path, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Daemon{}, fmt.Errorf("upstream virtiofsd %s does not exist: install it or point --guard-upstream at one: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return Daemon{}, fmt.Errorf("upstream virtiofsd: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return Daemon{}, fmt.Errorf("upstream virtiofsd %s is not an executable file: %w", path, errdefs.ErrInvalidArgument)
	}
	key := newCacheKey(path, fi)
	cacheFile := ""
	if cacheDir != "" {
		sum := sha256.Sum256([]byte(path))
		cacheFile = filepath.Join(cacheDir, hex.EncodeToString(sum[:16])+".json")
		if d, ok := readCache(cacheFile, key); ok {
			return d, nil
		}
	}

	version, err := probe(ctx, path, "--version")
	if err != nil {
		return Daemon{}, err
	}
	flavour, v, err := parseVersion(version)
	if err != nil {
		return Daemon{}, fmt.Errorf("upstream virtiofsd %s: %w", path, err)
	}
	help, err := probe(ctx, path, "--help")
	if err != nil {
		return Daemon{}, err
	}
	d := Daemon{Path: path, Flavour: flavour, Version: v, Options: parseHelp(flavour, help)}
	if !d.Supports("--fd") {
		return Daemon{}, fmt.Errorf("upstream virtiofsd %s: its --help lists no --fd option, which Kata needs: %w", path, errdefs.ErrNotImplemented)
	}
	if cacheFile != "" {
		if err := writeCache(cacheFile, key, d); err != nil {
			log.G(ctx).WithError(err).WithField("cache", cacheFile).Debug("not caching the virtiofsd flavour")
		}
	}
	return d, nil
}

func probe(ctx context.Context, path, flag string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, flag)
	var out limitedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("upstream virtiofsd: %s %s: %w (output: %q)", path, flag, err, truncate(out.Bytes(), 200))
	}
	return out.Bytes(), nil
}

// limitedBuffer keeps the first maxProbeOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxProbeOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

type cacheKey struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

func newCacheKey(path string, fi fs.FileInfo) cacheKey {
	k := cacheKey{Path: path, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.Dev, k.Ino = st.Dev, st.Ino
		k.CtimeNs = st.Ctim.Nano()
	}
	return k
}

type cacheEntry struct {
	Key    cacheKey `json:"key"`
	Daemon Daemon   `json:"daemon"`
}

func readCache(file string, key cacheKey) (Daemon, bool) {
	f, err := os.Open(file)
	if err != nil {
		return Daemon{}, false
	}
	defer f.Close()
	var e cacheEntry
	if err := json.NewDecoder(io.LimitReader(f, maxProbeOutput)).Decode(&e); err != nil {
		return Daemon{}, false
	}
	if e.Key != key || e.Daemon.Path != key.Path || (e.Daemon.Flavour != FlavourRust && e.Daemon.Flavour != FlavourC) {
		return Daemon{}, false
	}
	slices.Sort(e.Daemon.Options)
	return e.Daemon, true
}

// writeCache replaces file atomically, so concurrent sandbox starts read
// either the old entry or the new one.
func writeCache(file string, key cacheKey, d Daemon) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(cacheEntry{Key: key, Daemon: d})
	if err != nil {
		return err
	}
	return atomicfile.Write(file, b, 0o600)
}
