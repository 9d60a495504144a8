package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
)

// DropInDir is the directory beside the configuration file whose entries Kata
// merges over it.
const DropInDir = "config.d"

// maxConfigSize caps each file read; Kata's shipped files are ~30 KiB.
const maxConfigSize = 4 << 20

// File is Kata's configuration after config.d merging: only the keys we
// model. Unknown keys and tables are tolerated and ignored, as Kata does.
type File struct {
	// Path is the main file, symlinks resolved (as Kata resolves it).
	Path string `json:"path"`
	// DropIns are the config.d entries merged over it, in merge order.
	DropIns []string `json:"drop_ins"`

	Hypervisors map[string]Hypervisor `json:"hypervisors"`
	Agents      map[string]Agent      `json:"agents"`
	Runtime     Runtime               `json:"runtime"`
	Guard       Guard                 `json:"submount_guard"`

	// origins maps a dotted key to the file that set it last.
	origins map[string]string
	// root is where the host's / was mounted when the file was loaded
	// (Sources.Root); its paths are host paths.
	root string
}

// origin names the file that set key, or the main file.
func (f *File) origin(key string) string {
	if o, ok := f.origins[key]; ok {
		return o
	}
	return f.Path
}

// doc is one TOML document as Kata's tomlConfig sees the parts we model.
type doc struct {
	Hypervisor    map[string]Hypervisor `toml:"hypervisor"`
	Agent         map[string]Agent      `toml:"agent"`
	Runtime       Runtime               `toml:"runtime"`
	SubmountGuard map[string]any        `toml:"submount_guard"`
}

// Load reads the configuration file at path (already resolved) and merges
// every entry of config.d beside it in lexical order, as Kata does: every
// entry, whatever its name, and an entry that is not a readable TOML file is
// an error.
func Load(path string) (*File, error) {
	return loadIn("", path)
}

// loadIn is Load of the host path path on a host whose / is at root
// (Sources.Root); the files are named by their host paths.
func loadIn(root, path string) (*File, error) {
	onHost := func(p string) string {
		if isHostRoot(root) {
			return p
		}
		return filepath.Join(root, p)
	}
	data, err := readCapped(onHost(path))
	if err != nil {
		return nil, err
	}
	var dropIns []namedBytes
	dir := filepath.Join(filepath.Dir(path), DropInDir)
	entries, err := os.ReadDir(onHost(dir))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read drop-in directory %s: %w", dir, err)
	default:
		// os.ReadDir sorts by name, the order Kata merges in.
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			b, err := readCapped(onHost(p))
			if err != nil {
				return nil, fmt.Errorf("drop-in %s: %w", p, err)
			}
			dropIns = append(dropIns, namedBytes{name: p, data: b})
		}
	}
	f, err := build(path, data, dropIns)
	if err != nil {
		return nil, err
	}
	f.root = root
	return f, nil
}

// parse reads one configuration document held in data, named name in
// errors, without drop-ins.
func parse(name string, data []byte) (*File, error) {
	return build(name, data, nil)
}

type namedBytes struct {
	name string
	data []byte
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a TOML file: %w", path, errdefs.ErrInvalidArgument)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", path, maxConfigSize, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

func build(mainName string, main []byte, dropIns []namedBytes) (*File, error) {
	merged, md, err := decode(mainName, main)
	if err != nil {
		return nil, err
	}
	f := &File{Path: mainName, origins: map[string]string{}}
	if err := checkGuardIsTable(mainName, md); err != nil {
		return nil, err
	}
	for _, k := range md.Keys() {
		f.origins[k.String()] = mainName
	}
	for _, d := range dropIns {
		src, md, err := decode(d.name, d.data)
		if err != nil {
			return nil, err
		}
		if err := checkGuardIsTable(d.name, md); err != nil {
			return nil, err
		}
		mergeDropIn(merged, src, md, d.name, f.origins)
		f.DropIns = append(f.DropIns, d.name)
	}

	names := make([]string, 0, len(merged.Hypervisor))
	for n := range merged.Hypervisor {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !contains(hypervisorNames(), n) {
			reason := "unknown hypervisor table (Kata refuses it too)"
			if n == "fc" {
				reason += "; Firecracker's table is [hypervisor.firecracker]"
			}
			return nil, fmt.Errorf("%s: [hypervisor.%s]: %s; allowed: %s: %w",
				f.origin("hypervisor."+n), n, reason, strings.Join(hypervisorNames(), ", "), errdefs.ErrInvalidArgument)
		}
	}
	f.Hypervisors = merged.Hypervisor
	if f.Hypervisors == nil {
		f.Hypervisors = map[string]Hypervisor{}
	}
	f.Agents = merged.Agent
	if f.Agents == nil {
		f.Agents = map[string]Agent{}
	}
	f.Runtime = merged.Runtime
	g, err := parseGuard(merged.SubmountGuard, f.origin)
	if err != nil {
		return nil, err
	}
	f.Guard = g
	return f, nil
}

// decode parses one document. Syntax errors carry line and column; a value
// of the wrong type carries the line and the key.
func decode(name string, data []byte) (*doc, toml.MetaData, error) {
	var d doc
	md, err := toml.Decode(string(withoutCommentLines(data)), &d)
	if err != nil {
		// The error as the file itself gives it.
		d = doc{}
		if md, err = toml.Decode(string(data), &d); err != nil {
			return nil, md, tomlError(name, data, err)
		}
	}
	return &d, md, nil
}

// tomlLinePrefix matches the start of msg as the regular expression
// ^toml: line (\d+)(?: \(last key "[^"]*"\))?: does: the whole prefix and
// the line number. By hand: compiling the shim's six regular expressions at
// every start cost it 0.1 ms (BENCHMARKS.md); FuzzTOMLLinePrefix compares the
// two.
func tomlLinePrefix(msg string) (prefix, line string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "toml: line ")
	if !ok {
		return "", "", false
	}
	i := 0
	for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
		i++
	}
	if i == 0 {
		return "", "", false
	}
	line, rest = rest[:i], rest[i:]
	if key, ok := strings.CutPrefix(rest, ` (last key "`); ok {
		if q := strings.IndexByte(key, '"'); q >= 0 {
			if after, ok := strings.CutPrefix(key[q:], `"): `); ok {
				return msg[:len(msg)-len(after)], line, true
			}
		}
	}
	if after, ok := strings.CutPrefix(rest, ": "); ok {
		return msg[:len(msg)-len(after)], line, true
	}
	return "", "", false
}

func tomlError(name string, data []byte, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		line, col := pe.Position.Line, pe.Position.Col
		if col == 0 && pe.Position.Start > 0 && pe.Position.Start <= len(data) {
			col = pe.Position.Start - strings.LastIndexByte(string(data[:pe.Position.Start]), '\n')
		}
		msg := pe.Message
		if pe.LastKey != "" {
			msg = fmt.Sprintf("%s (last key %q)", msg, pe.LastKey)
		}
		return &SyntaxError{File: name, Line: line, Col: col, Msg: msg}
	}
	// Type mismatches come as plain errors with the line in the text.
	msg := err.Error()
	line := 0
	if prefix, digits, ok := tomlLinePrefix(msg); ok {
		line, _ = strconv.Atoi(digits)
		key := ""
		if i := strings.Index(prefix, `(last key "`); i >= 0 {
			key = strings.TrimSuffix(prefix[i+len(`(last key "`):], `"): `)
		}
		msg = strings.TrimPrefix(msg, prefix)
		if key != "" {
			msg = key + ": " + msg
		}
	}
	return &SyntaxError{File: name, Line: line, Msg: msg}
}

// checkGuardIsTable rejects `submount_guard = <scalar>`, which the TOML
// library would otherwise drop silently.
func checkGuardIsTable(name string, md toml.MetaData) error {
	if t := md.Type(guardTable); t != "" && t != "Hash" {
		return &ValueError{File: name, Table: guardTable, Key: "(table)", Value: t, Reason: "[submount_guard] must be a table"}
	}
	return nil
}

// mergeDropIn applies the keys one drop-in sets, one by one, as Kata's
// updateFromDropIn does: a key replaces the value before it (arrays
// included); a table appears only when the drop-in sets a key in it.
func mergeDropIn(dst, src *doc, md toml.MetaData, name string, origins map[string]string) {
	for _, key := range md.Keys() {
		switch {
		case len(key) == 3 && key[0] == "hypervisor":
			if dst.Hypervisor == nil {
				dst.Hypervisor = map[string]Hypervisor{}
			}
			h := dst.Hypervisor[key[1]]
			// Keys we do not model are Kata's business (it rejects the
			// ones it does not know); they neither set nor create anything.
			if !copyTagged(&h, src.Hypervisor[key[1]], key[2]) {
				continue
			}
			dst.Hypervisor[key[1]] = h
		case len(key) == 3 && key[0] == "agent":
			if dst.Agent == nil {
				dst.Agent = map[string]Agent{}
			}
			a := dst.Agent[key[1]]
			if !copyTagged(&a, src.Agent[key[1]], key[2]) {
				continue
			}
			dst.Agent[key[1]] = a
		case len(key) == 2 && key[0] == "runtime":
			if !copyTagged(&dst.Runtime, src.Runtime, key[1]) {
				continue
			}
		case len(key) == 2 && key[0] == guardTable:
			if dst.SubmountGuard == nil {
				dst.SubmountGuard = map[string]any{}
			}
			dst.SubmountGuard[key[1]] = src.SubmountGuard[key[1]]
		default:
			continue
		}
		origins[key.String()] = name
		if len(key) == 3 {
			origins[key[0]+"."+key[1]] = name
		}
	}
}

// copyTagged sets the field of *dst tagged toml:"tag" to src's; it reports
// whether such a field exists.
func copyTagged[T any](dst *T, src T, tag string) bool {
	dv := reflect.ValueOf(dst).Elem()
	sv := reflect.ValueOf(src)
	t := dv.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("toml") == tag {
			dv.Field(i).Set(sv.Field(i))
			return true
		}
	}
	return false
}
