package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// mergeEnv adds ours to Kata's env output, TOML or JSON, keeping Kata's
// sections, keys, values and order as Kata printed them: KernelFix's keys
// join Kata's Kernel section, envFormatSuffix is appended to its
// Meta.Version, and the SubmountGuard section comes last. A key of ours that
// Kata already has takes our value.
func mergeEnv(kata []byte, ours EnvInfo, asJSON bool) ([]byte, error) {
	if asJSON {
		return mergeJSON(kata, ours)
	}
	return mergeTOML(kata, ours)
}

func metaVersion(kata string) string {
	if kata == "" {
		return strings.TrimPrefix(envFormatSuffix, "-")
	}
	return kata + envFormatSuffix
}

// member is one name/value pair of a JSON object, the value as written.
type member struct {
	Name  string
	Value json.RawMessage
}

// objectMembers splits one JSON object into its members, in order.
func objectMembers(data []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("member %q: %w", name, err)
		}
		ms = append(ms, member{Name: name, Value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return ms, nil
}

func encodeMembers(ms []member) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(m.Name)
		b.Write(name)
		b.WriteByte(':')
		b.Write(m.Value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// setMember replaces the member called name, or appends it.
func setMember(ms []member, name string, v json.RawMessage) []member {
	for i := range ms {
		if ms[i].Name == name {
			ms[i].Value = v
			return ms
		}
	}
	return append(ms, member{Name: name, Value: v})
}

func lookupMember(ms []member, name string) (json.RawMessage, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m.Value, true
		}
	}
	return nil, false
}

// setMembers sets every member of the object ours encodes to into the
// object called name in top (created if missing).
func setMembers(top []member, name string, ours any) ([]member, error) {
	var inner []member
	if raw, ok := lookupMember(top, name); ok {
		var err error
		if inner, err = objectMembers(raw); err != nil {
			return nil, fmt.Errorf("Kata's %s: %w", name, err)
		}
	}
	data, err := json.Marshal(ours)
	if err != nil {
		return nil, err
	}
	add, err := objectMembers(data)
	if err != nil {
		return nil, err
	}
	for _, m := range add {
		inner = setMember(inner, m.Name, m.Value)
	}
	return setMember(top, name, encodeMembers(inner)), nil
}

func mergeJSON(kata []byte, ours EnvInfo) ([]byte, error) {
	top, err := objectMembers(kata)
	if err != nil {
		return nil, fmt.Errorf("Kata's env --json: %w", err)
	}
	var meta struct{ Meta MetaInfo }
	if err := json.Unmarshal(kata, &meta); err != nil {
		return nil, fmt.Errorf("Kata's env --json: %w", err)
	}
	if top, err = setMembers(top, "Kernel", ours.Kernel.KernelFix); err != nil {
		return nil, err
	}
	if top, err = setMembers(top, "Meta", MetaInfo{Version: metaVersion(meta.Meta.Version)}); err != nil {
		return nil, err
	}
	guard, err := json.Marshal(ours.SubmountGuard)
	if err != nil {
		return nil, err
	}
	top = setMember(top, "SubmountGuard", guard)
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, encodeMembers(top)); err != nil {
		return nil, err
	}
	// As Kata's encoder: two-space indent, one trailing newline.
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

var (
	tomlHeader = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*$`)
	tomlKey    = regexp.MustCompile(`^(\s*)([A-Za-z0-9_-]+)\s*=`)
)

// tomlKeyLines encodes v, a struct of one table, and returns that table's
// key lines, unindented.
func tomlKeyLines(v any) ([]string, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		if tomlKey.MatchString(l) {
			lines = append(lines, strings.TrimLeft(l, " \t"))
		}
	}
	return lines, nil
}

// setTOMLKeys sets the key lines kv in table of lines: a key the table has
// is replaced in place, the others follow its last key, indented as its
// keys are. A missing table is appended.
func setTOMLKeys(lines []string, table string, kv []string) []string {
	start := -1
	for i, l := range lines {
		if m := tomlHeader.FindStringSubmatch(l); m != nil && m[1] == table {
			start = i
			break
		}
	}
	if start < 0 {
		lines = append(lines, "", "["+table+"]")
		for _, l := range kv {
			lines = append(lines, "  "+l)
		}
		return lines
	}
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if tomlHeader.MatchString(lines[i]) {
			end = i
			break
		}
	}
	indent, last := "  ", start
	keys := map[string]int{}
	for i := start + 1; i < end; i++ {
		if m := tomlKey.FindStringSubmatch(lines[i]); m != nil {
			if len(keys) == 0 {
				indent = m[1]
			}
			keys[m[2]] = i
			last = i
		}
	}
	var add []string
	for _, l := range kv {
		key := tomlKey.FindStringSubmatch(l)[2]
		if i, ok := keys[key]; ok {
			lines[i] = indent + l
			continue
		}
		add = append(add, indent+l)
	}
	out := make([]string, 0, len(lines)+len(add))
	out = append(out, lines[:last+1]...)
	out = append(out, add...)
	return append(out, lines[last+1:]...)
}

func mergeTOML(kata []byte, ours EnvInfo) ([]byte, error) {
	var meta struct{ Meta MetaInfo }
	if _, err := toml.Decode(string(kata), &meta); err != nil {
		return nil, fmt.Errorf("Kata's env: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(kata), "\n"), "\n")
	for _, t := range []struct {
		name string
		v    any
	}{
		{"Kernel", struct{ Kernel KernelFix }{ours.Kernel.KernelFix}},
		{"Meta", struct{ Meta MetaInfo }{MetaInfo{Version: metaVersion(meta.Meta.Version)}}},
	} {
		kv, err := tomlKeyLines(t.v)
		if err != nil {
			return nil, err
		}
		lines = setTOMLKeys(lines, t.name, kv)
	}
	var b bytes.Buffer
	b.WriteString(strings.Join(lines, "\n"))
	b.WriteString("\n\n")
	if err := toml.NewEncoder(&b).Encode(struct{ SubmountGuard GuardInfo }{ours.SubmountGuard}); err != nil {
		return nil, err
	}
	// Read it back: a line-wise edit must not have broken Kata's TOML or
	// lost ours (a SubmountGuard table of Kata's own would now be twice).
	var back struct {
		Kernel        KernelFix
		SubmountGuard struct{ Action string }
	}
	if _, err := toml.Decode(b.String(), &back); err != nil {
		return nil, fmt.Errorf("Kata's env with ours added is not TOML: %w", err)
	}
	if back.Kernel != ours.Kernel.KernelFix || back.SubmountGuard.Action != ours.SubmountGuard.Action {
		return nil, errors.New("Kata's env with ours added does not read back as ours")
	}
	return b.Bytes(), nil
}
