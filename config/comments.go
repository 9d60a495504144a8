package config

import (
	"bytes"
	"unicode/utf8"
)

// withoutCommentLines returns data with the text of every whole-line comment
// taken out, the line breaks kept. Kata's shipped configuration files are
// mostly such comments, and the TOML library lexes them rune by rune: with a
// 29 KB file of that shape a shim start ran 9.0M instructions, 4.3M without
// its comments (BENCHMARKS.md).
//
// What the library reads does not change. A line whose first character after
// spaces and tabs is '#' is a comment everywhere in TOML but inside a
// multi-line string, so data holding a multi-line string delimiter (three
// double or three single quotes) is returned as it is. A comment the library
// would reject (a control character, invalid UTF-8, a carriage return not
// ending the line) is kept, so that the error stays. decode reads data itself
// again whenever the result fails, so errors and their positions are the
// file's own. FuzzCommentLines compares the library's results on data and on
// what this returns.
func withoutCommentLines(data []byte) []byte {
	if bytes.Contains(data, []byte(`"""`)) || bytes.Contains(data, []byte(`'''`)) {
		return data
	}
	out := make([]byte, 0, len(data))
	for rest := data; len(rest) > 0; {
		line, after, newline := bytes.Cut(rest, []byte{'\n'})
		rest = after
		i := 0
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i == len(line) || line[i] != '#' || !lexableComment(line[i+1:], newline) {
			out = append(out, line...)
		}
		if newline {
			out = append(out, '\n')
		}
	}
	return out
}

// lexableComment reports whether the TOML library accepts text as the rest
// of a comment line: UTF-8 without control characters but tab, and a
// carriage return only as the end of a line that a newline ends.
func lexableComment(text []byte, newline bool) bool {
	if newline && len(text) > 0 && text[len(text)-1] == '\r' {
		text = text[:len(text)-1]
	}
	for _, c := range text {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(text)
}
