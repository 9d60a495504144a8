package delegate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
	"github.com/kata-submount-guard/kata-submount-guard/internal/capped"
	"github.com/kata-submount-guard/kata-submount-guard/internal/oserr"
)

// Identity is what a delegate shim says it is.
type Identity struct {
	Kind config.DelegateKind `json:"kind"`
	// Version is the Kata release it reports ("4.1.0"); Line is its
	// --version line as printed.
	Version string `json:"version"`
	Line    string `json:"line"`
}

const (
	// versionTimeout bounds `--version`: Kata's shims answer at once, and
	// a delegate that hangs must not hang containerd's start.
	versionTimeout = 5 * time.Second
	// maxVersionOutput caps what is read of it.
	maxVersionOutput = 4096
	versionPrefix    = "Kata Containers containerd shim"
)

// parseVersion reads a Kata shim's --version output:
//
//	Kata Containers containerd shim (Golang): id: "io.containerd.kata.v2", version: 4.1.0, commit: ...
//	Kata Containers containerd shim: id: "io.containerd.kata.v2", version: 3.0.2, commit: ...   (3.0.x)
//	Kata Containers containerd shim (Rust): id: "io.containerd.kata.v2", version: 4.1.0, commit: ...
//
// A Go shim of major version 4 or later is DelegateGo4, an earlier one
// DelegateGo3. Anything else is an error: a delegate is never guessed.
func parseVersion(out []byte) (Identity, error) {
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, versionPrefix)
		if !ok {
			continue
		}
		flavour := "Golang"
		if r, ok := strings.CutPrefix(rest, " ("); ok {
			end := strings.IndexByte(r, ')')
			if end < 0 {
				return Identity{}, fmt.Errorf("unterminated flavour in %q", line)
			}
			flavour, rest = r[:end], r[end+1:]
		}
		version := ""
		for _, field := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(field), "version:"); ok {
				version = strings.TrimSpace(v)
			}
		}
		major, err := majorOf(version)
		if err != nil {
			return Identity{}, fmt.Errorf("version %q in %q: %w", version, line, err)
		}
		id := Identity{Version: version, Line: line}
		switch {
		case flavour == "Rust":
			id.Kind = config.DelegateRuntimeRS
		case flavour != "Golang":
			return Identity{}, fmt.Errorf("unknown flavour %q in %q", flavour, line)
		case major >= 4:
			id.Kind = config.DelegateGo4
		default:
			id.Kind = config.DelegateGo3
		}
		return id, nil
	}
	return Identity{}, fmt.Errorf("no %q line", versionPrefix)
}

func majorOf(version string) (int, error) {
	head, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(head)
	if err != nil || n < 1 || !strings.Contains(version, ".") {
		return 0, errors.New("not a Kata release number")
	}
	return n, nil
}

// identifyBinary tells which Kata shim path is: from the cache under cacheDir
// when the binary is the one seen before (device, inode, size, mtime,
// ctime), else by running `path --version` and caching the answer. A
// binary that cannot be identified is an installation error.
func identifyBinary(ctx context.Context, path, cacheDir string) (Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Identity{}, fmt.Errorf("delegate shim %s cannot be identified: %w; install Kata's containerd-shim-kata-v2 there or point [submount_guard] delegate_shim at it: %w",
			path, oserr.Cause(err), errdefs.ErrNotFound)
	}
	key := keyOf(fi)
	cacheFile := ""
	if cacheDir != "" && key != nil {
		cacheFile = filepath.Join(cacheDir, key.name())
		if id, ok := readCached(cacheFile, path, *key); ok {
			return id, nil
		}
	}
	if self, err := os.Stat("/proc/self/exe"); err == nil && os.SameFile(self, fi) {
		return Identity{}, fmt.Errorf("delegate shim %s is this guard shim itself; point [submount_guard] delegate_shim at Kata's upstream containerd-shim-kata-v2: %w", path, errdefs.ErrInvalidArgument)
	}
	id, err := askVersion(ctx, path)
	if err != nil {
		return Identity{}, err
	}
	if cacheFile != "" {
		if err := writeCached(cacheFile, cached{Path: path, Key: *key, Identity: id}); err != nil {
			log.G(ctx).WithError(err).WithField("delegate", path).Debug("delegate identity not cached")
		}
	}
	return id, nil
}

func askVersion(ctx context.Context, path string) (Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	var out bytes.Buffer
	cmd.Stdout = &capped.Writer{W: &out, N: maxVersionOutput}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	fix := fmt.Sprintf("point [submount_guard] delegate_shim at Kata's upstream containerd-shim-kata-v2, or pin delegate_kind (%s) if it is a wrapper of one",
		strings.Join(config.DelegateKinds()[1:], ", "))
	if ctx.Err() != nil {
		return Identity{}, fmt.Errorf("delegate shim %s did not answer --version within %s; %s: %w", path, versionTimeout, fix, errdefs.ErrFailedPrecondition)
	}
	id, perr := parseVersion(out.Bytes())
	if perr != nil {
		if err != nil {
			perr = fmt.Errorf("%w (%w)", perr, err)
		}
		return Identity{}, fmt.Errorf("delegate shim %s is not a Kata shim this guard knows: its --version gave %q: %w; %s: %w",
			path, firstLine(out.String()), perr, fix, errdefs.ErrFailedPrecondition)
	}
	return id, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return line
}

// binaryKey identifies one installed binary: replacing or touching it
// changes the key.
type binaryKey struct {
	Dev, Ino, Size, MtimeNs, CtimeNs int64
}

func keyOf(fi os.FileInfo) *binaryKey {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &binaryKey{
		Dev: int64(st.Dev), Ino: int64(st.Ino), Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
	}
}

func (k binaryKey) name() string {
	return fmt.Sprintf("%x-%x.json", k.Dev, k.Ino)
}

type cached struct {
	Path     string    `json:"path"`
	Key      binaryKey `json:"key"`
	Identity Identity  `json:"identity"`
}

func readCached(file, path string, key binaryKey) (Identity, bool) {
	data, err := os.ReadFile(file)
	if err != nil || len(data) > maxVersionOutput*2 {
		return Identity{}, false
	}
	var c cached
	if json.Unmarshal(data, &c) != nil || c.Key != key || c.Path != path {
		return Identity{}, false
	}
	switch c.Identity.Kind {
	case config.DelegateGo3, config.DelegateGo4, config.DelegateRuntimeRS:
		return c.Identity, true
	}
	return Identity{}, false
}

// writeCached stores c in a 0700 directory, atomically (a concurrent start
// reads the old entry or the new one).
func writeCached(file string, c cached) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(file, data, 0o600)
}
