package virtiofsd

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
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

// parseVersion tells the flavour and version from a daemon's --version
// output. It returns an error wrapping errdefs.ErrNotImplemented for output
// of neither flavour.
//
// The parsers here are written out rather than regular expressions: they
// kept package regexp, and with it the Unicode tables, out of
// kata-virtiofsd, whose binary is resident twice per sandbox (the waiting
// parent and the sandboxed daemon).
func parseVersion(out []byte) (Flavour, string, error) {
	first, rest, _ := bytes.Cut(out, []byte("\n"))
	first = bytes.TrimSpace(first)
	// Rust: "virtiofsd X.Y.Z" (a suffix may follow Z), and nothing else.
	if v, ok := bytes.CutPrefix(first, []byte("virtiofsd ")); ok && len(bytes.TrimSpace(rest)) == 0 {
		if n := versionLen(v); n > 0 && bytes.IndexAny(v, asciiSpace) < 0 {
			return FlavourRust, string(v), nil
		}
	}
	// QEMU prints its version, copyright and the FUSE interface version.
	if v, ok := bytes.CutPrefix(first, []byte("virtiofsd version ")); ok && bytes.Contains(rest, []byte("FUSE kernel interface")) {
		if n := versionLen(v); n > 0 {
			return FlavourC, string(v[:n]), nil
		}
	}
	return "", "", fmt.Errorf("--version printed %q, which is neither the Rust virtiofsd's "+
		"\"virtiofsd X.Y.Z\" nor QEMU's \"virtiofsd version X.Y.Z ... FUSE kernel interface\": %w",
		truncate(out, 200), errdefs.ErrNotImplemented)
}

// asciiSpace is what the version and help formats count as white space.
const asciiSpace = " \t\n\f\r"

func isSpace(c byte) bool { return strings.IndexByte(asciiSpace, c) >= 0 }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// versionLen is the length of the "X.Y.Z" (digits, dot, digits, dot,
// digits) that b starts with, or 0.
func versionLen(b []byte) int {
	i := 0
	for part := range 3 {
		if part > 0 {
			if i >= len(b) || b[i] != '.' {
				return 0
			}
			i++
		}
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return 0
		}
	}
	return i
}

// parseHelp lists the options a daemon's --help output names, sorted: a
// "--name" that starts an indented line, after a short option ("-s" or
// "-s,") if there is one; for the C daemon also every name of an indented
// "-o name|name/name" line.
func parseHelp(f Flavour, out []byte) []string {
	seen := map[string]bool{}
	forIndentedLines(out, func(line []byte) {
		if name := longOption(line); name != "" {
			seen[name] = true
		}
		if f != FlavourC {
			return
		}
		for _, name := range compatOptions(line) {
			seen[name] = true
		}
	})
	return sortedNames(seen)
}

// sortedNames is seen's keys, sorted; empty, not nil, for none.
func sortedNames(seen map[string]bool) []string {
	opts := make([]string, 0, len(seen))
	for k := range seen {
		opts = append(opts, k)
	}
	slices.Sort(opts)
	return opts
}

// forIndentedLines calls fn with the text after the white space that opens
// each line of out, for lines that open with some; that white space may
// span empty lines.
func forIndentedLines(out []byte, fn func(rest []byte)) {
	for start := 0; start < len(out); {
		i := start
		for i < len(out) && isSpace(out[i]) {
			i++
		}
		if i > start {
			fn(out[i:])
		}
		next := bytes.IndexByte(out[start:], '\n')
		if next < 0 {
			return
		}
		start += next + 1
	}
}

// longOption returns the "--name" that b opens with, after an optional
// short option and its white space ("-s --name", "-s, --name"), or "".
func longOption(b []byte) string {
	if len(b) >= 2 && b[0] == '-' && isLetter(b[1]) {
		i := 2
		if i < len(b) && b[i] == ',' {
			i++
		}
		j := i
		for j < len(b) && isSpace(b[j]) {
			j++
		}
		if j > i {
			b = b[j:]
		}
	}
	if len(b) < 3 || b[0] != '-' || b[1] != '-' || !isOptionChar(b[2]) || b[2] == '-' {
		return ""
	}
	n := 3
	for n < len(b) && isOptionChar(b[n]) {
		n++
	}
	return string(b[:n])
}

// compatOptions returns the names of a C daemon's "-o name|name/name" line
// that b is, or nil.
func compatOptions(b []byte) []string {
	b, ok := bytes.CutPrefix(b, []byte("-o "))
	if !ok {
		return nil
	}
	var names []string
	for {
		n := 0
		for n < len(b) && isCompatChar(b[n]) {
			n++
		}
		if n == 0 {
			return names
		}
		names = append(names, string(b[:n]))
		b = b[n:]
		// "|" and "/" separate the names only when a name follows.
		if len(b) < 2 || (b[0] != '|' && b[0] != '/') || !isCompatChar(b[1]) {
			return names
		}
		b = b[1:]
	}
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isOptionChar(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) || c == '-' }

func isCompatChar(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) || c == '_' }

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
		// FNV, not a cryptographic hash: the name only spreads the files,
		// the key inside is checked, and crypto would add to this binary.
		h := fnv.New128a()
		h.Write([]byte(path))
		cacheFile = filepath.Join(cacheDir, hex.EncodeToString(h.Sum(nil))+".json")
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
