package installer

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
)

// containerd's configuration belongs to the administrator and to kata-deploy:
// we change single values in place, as text, so that every other byte stays
// as they wrote it and Uninstall can put the very same bytes back. A TOML
// re-encoder would reorder and reformat the whole file.

// kvSpan is one `key = value` of a TOML document: the table it is in, the
// key as written (dotted keys split), and where its value's text lies.
type kvSpan struct {
	table      []string
	arrayTable bool
	key        []string
	start, end int
}

func (s kvSpan) path() []string { return append(append([]string{}, s.table...), s.key...) }

// scanTOML finds every key/value of doc. It understands exactly what it must
// to skip values safely (strings of the four kinds, nested arrays and inline
// tables, comments); BurntSushi/toml has already said the document is valid
// before anything here is trusted (see editTOML).
func scanTOML(doc []byte) ([]kvSpan, error) {
	var (
		spans      []kvSpan
		table      []string
		arrayTable bool
	)
	i := 0
	for i < len(doc) {
		i = skipSpace(doc, i)
		if i >= len(doc) {
			break
		}
		switch c := doc[i]; {
		case c == '\n' || c == '\r':
			i++
		case c == '#':
			i = lineEnd(doc, i)
		case c == '[':
			arrayTable = i+1 < len(doc) && doc[i+1] == '['
			j := i + 1
			if arrayTable {
				j++
			}
			keys, k, err := parseKey(doc, j)
			if err != nil {
				return nil, err
			}
			table = keys
			i = lineEnd(doc, k)
		default:
			keys, k, err := parseKey(doc, i)
			if err != nil {
				return nil, err
			}
			k = skipSpace(doc, k)
			if k >= len(doc) || doc[k] != '=' {
				return nil, fmt.Errorf("offset %d: expected '=' after key %q", k, strings.Join(keys, "."))
			}
			k = skipSpace(doc, k+1)
			end, err := skipValue(doc, k)
			if err != nil {
				return nil, err
			}
			spans = append(spans, kvSpan{table: table, arrayTable: arrayTable, key: keys, start: k, end: end})
			i = lineEnd(doc, end)
		}
	}
	return spans, nil
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t') {
		i++
	}
	return i
}

// lineEnd returns the offset just past the end of the line holding i.
func lineEnd(doc []byte, i int) int {
	if n := bytes.IndexByte(doc[i:], '\n'); n >= 0 {
		return i + n + 1
	}
	return len(doc)
}

// parseKey reads a dotted key (bare, "basic" or 'literal' parts) up to '=',
// ']' or the end of the line; it returns the parts and the offset after them.
func parseKey(doc []byte, i int) ([]string, int, error) {
	var keys []string
	for {
		i = skipSpace(doc, i)
		if i >= len(doc) {
			return nil, i, fmt.Errorf("offset %d: key cut short", i)
		}
		var part string
		switch doc[i] {
		case '"':
			end, err := skipBasic(doc, i)
			if err != nil {
				return nil, i, err
			}
			var s string
			if _, err := toml.Decode("k = "+string(doc[i:end]), &struct {
				K *string `toml:"k"`
			}{K: &s}); err != nil {
				return nil, i, fmt.Errorf("offset %d: quoted key: %w", i, err)
			}
			part, i = s, end
		case '\'':
			end := bytes.IndexByte(doc[i+1:], '\'')
			if end < 0 {
				return nil, i, fmt.Errorf("offset %d: unterminated literal key", i)
			}
			part, i = string(doc[i+1:i+1+end]), i+end+2
		default:
			j := i
			for j < len(doc) && isBare(doc[j]) {
				j++
			}
			if j == i {
				return nil, i, fmt.Errorf("offset %d: expected a key", i)
			}
			part, i = string(doc[i:j]), j
		}
		keys = append(keys, part)
		i = skipSpace(doc, i)
		if i < len(doc) && doc[i] == '.' {
			i++
			continue
		}
		if i < len(doc) && doc[i] == ']' { // table header
			i++
			if i < len(doc) && doc[i] == ']' {
				i++
			}
		}
		return keys, i, nil
	}
}

func isBare(c byte) bool {
	return c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// skipBasic skips a "basic" string starting at i, escapes included.
func skipBasic(doc []byte, i int) (int, error) {
	for j := i + 1; j < len(doc); j++ {
		switch doc[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		case '\n':
			return 0, fmt.Errorf("offset %d: unterminated string", i)
		}
	}
	return 0, fmt.Errorf("offset %d: unterminated string", i)
}

// skipValue returns the offset just past the value starting at i.
func skipValue(doc []byte, i int) (int, error) {
	switch {
	case bytes.HasPrefix(doc[i:], []byte(`"""`)):
		for j := i + 3; j < len(doc); j++ {
			if doc[j] == '\\' {
				j++
				continue
			}
			if bytes.HasPrefix(doc[j:], []byte(`"""`)) {
				j += 3
				for j < len(doc) && doc[j] == '"' { // up to two quotes may end the content
					j++
				}
				return j, nil
			}
		}
		return 0, fmt.Errorf("offset %d: unterminated multi-line string", i)
	case bytes.HasPrefix(doc[i:], []byte(`'''`)):
		n := bytes.Index(doc[i+3:], []byte(`'''`))
		if n < 0 {
			return 0, fmt.Errorf("offset %d: unterminated multi-line literal", i)
		}
		j := i + 3 + n + 3
		for j < len(doc) && doc[j] == '\'' {
			j++
		}
		return j, nil
	case i < len(doc) && doc[i] == '"':
		return skipBasic(doc, i)
	case i < len(doc) && doc[i] == '\'':
		n := bytes.IndexByte(doc[i+1:], '\'')
		if n < 0 {
			return 0, fmt.Errorf("offset %d: unterminated literal string", i)
		}
		return i + n + 2, nil
	case i < len(doc) && (doc[i] == '[' || doc[i] == '{'):
		depth := 0
		for j := i; j < len(doc); j++ {
			switch doc[j] {
			case '[', '{':
				depth++
			case ']', '}':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			case '#':
				j = lineEnd(doc, j) - 1
			case '"', '\'':
				end, err := skipValue(doc, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			}
		}
		return 0, fmt.Errorf("offset %d: unterminated array or inline table", i)
	default:
		j := i
		for j < len(doc) && doc[j] != '\n' && doc[j] != '#' && doc[j] != '\r' {
			j++
		}
		for j > i && (doc[j-1] == ' ' || doc[j-1] == '\t') {
			j--
		}
		return j, nil
	}
}

// tomlString renders s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// editTOML replaces the value of the key at path (table parts then key
// parts, as decoded) with the TOML text value, and proves the result: both
// documents decoded, the old one with the new value put in by hand, must be
// equal. A key written in a form we cannot locate (inside an inline table,
// say) is an error wrapping errdefs.ErrNotFound, never a guess.
func editTOML(name string, doc []byte, path []string, value string) ([]byte, error) {
	var before map[string]any
	if err := toml.Unmarshal(doc, &before); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	spans, err := scanTOML(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	found := -1
	for i, s := range spans {
		if !s.arrayTable && reflect.DeepEqual(s.path(), path) {
			found = i
		}
	}
	if found < 0 {
		return nil, fmt.Errorf("%s: no plain `key = value` line for %s to edit (an inline table, say); write it as `%s = ...` under its own [table] header: %w", name, dotted(path), path[len(path)-1], errdefs.ErrNotFound)
	}
	s := spans[found]
	out := make([]byte, 0, len(doc)+len(value))
	out = append(append(append(out, doc[:s.start]...), value...), doc[s.end:]...)

	var after, want map[string]any
	if err := toml.Unmarshal(out, &after); err != nil {
		return nil, fmt.Errorf("%s: editing %s broke the file (%w); left unchanged", name, dotted(path), err)
	}
	var v map[string]any
	if err := toml.Unmarshal([]byte("v = "+value), &v); err != nil {
		return nil, fmt.Errorf("render %s: %w", dotted(path), err)
	}
	_ = toml.Unmarshal(doc, &want)
	if !setPath(want, path, v["v"]) || !reflect.DeepEqual(after, want) {
		return nil, fmt.Errorf("%s: editing %s as text changed more than that key; left unchanged", name, dotted(path))
	}
	return out, nil
}

func setPath(m map[string]any, path []string, v any) bool {
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return false
		}
		m = next
	}
	m[path[len(path)-1]] = v
	return true
}

// getPath returns the value at path in a decoded document.
func getPath(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func dotted(path []string) string {
	q := make([]string, len(path))
	for i, p := range path {
		q[i] = p
		for j := 0; j < len(p); j++ {
			if !isBare(p[j]) {
				q[i] = tomlString(p)
				break
			}
		}
	}
	return strings.Join(q, ".")
}

func decodeTOML(doc []byte, v any) (toml.MetaData, error) { return toml.Decode(string(doc), v) }
