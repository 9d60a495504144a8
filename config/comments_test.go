package config

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"
)

// tomlResult is what the TOML library makes of a document, as config uses it
// and in general.
type tomlResult struct {
	Doc     doc
	Generic map[string]any
	Keys    []string
	Types   []string
	Err     bool
}

func decodeBoth(data string) tomlResult {
	var r tomlResult
	md, err := toml.Decode(data, &r.Doc)
	if err != nil {
		return tomlResult{Err: true}
	}
	for _, k := range md.Keys() {
		r.Keys = append(r.Keys, k.String())
		r.Types = append(r.Types, md.Type(k...))
	}
	if _, err := toml.Decode(data, &r.Generic); err != nil {
		return tomlResult{Err: true}
	}
	return r
}

// checkCommentLines: the library reads the same from data and from
// withoutCommentLines(data).
func checkCommentLines(t *testing.T, data []byte) {
	t.Helper()
	stripped := withoutCommentLines(data)
	require.Equal(t, strings.Count(string(data), "\n"), strings.Count(string(stripped), "\n"), "line breaks kept")
	want, got := decodeBoth(string(data)), decodeBoth(string(stripped))
	// %#v, not reflect.DeepEqual: a NaN value equals itself here.
	if fmt.Sprintf("%#v", want) != fmt.Sprintf("%#v", got) {
		t.Fatalf("%q\nstripped %q\nwant %#v\ngot  %#v", data, stripped, want, got)
	}
}

var commentSeeds = []string{
	"# only a comment",
	"a = 1 # trailing\n  # indented\n\t# tabbed\nb = [\n  1,\n  # in an array\n  2,\n]\n",
	"# crlf\r\na = 1\r\n  # again\r\n",
	"# a lone\rcarriage return\na = 1",
	"a = 1\n# ends with a carriage return\r",
	"# control \x01 char\na = 1",
	"# delete \x7f char\na = 1",
	"# invalid \xff utf-8\na = 1",
	"# é ünïcode ✓ \xef\xbf\xbd\na = \"#x\"",
	"s = \"\"\"\n# inside a multi-line string\n\"\"\"",
	"s = '''\n# inside a literal one\n'''",
	"t = {a = 1,\n# in an inline table\nb = 2}",
	"[hypervisor.qemu]\n# kernel = \"/commented/out\"\nkernel = \"/k\"\n[submount_guard]\n# on_vulnerable = \"refuse\"\non_unknown = \"warn\"\n",
	"a =\n# value on the next line\n1",
	"a = \"unterminated\n# comment\nb = 1",
	"#",
	"\n\n#\n",
}

func TestWithoutCommentLines(t *testing.T) {
	for _, s := range commentSeeds {
		checkCommentLines(t, []byte(s))
	}
	data, err := os.ReadFile("testdata/configuration-qemu.toml")
	require.NoError(t, err)
	checkCommentLines(t, data)

	t.Run("kept where the library would object", func(t *testing.T) {
		for _, s := range []string{"# \x01\n", "# a\rb\n", "# \xff\n", "x\n# end\r"} {
			require.Equal(t, s, string(withoutCommentLines([]byte(s))))
		}
	})
	t.Run("removed", func(t *testing.T) {
		require.Equal(t, "a = 1\n\n\nb = 2\n\n", string(withoutCommentLines([]byte("a = 1\n# x\n  # y \r\nb = 2\n#"+"\n"))))
	})
	t.Run("errors are the file's own", func(t *testing.T) {
		for _, s := range []string{"# a comment\n# another\nkernel = = 1\n", "# c\n  # d\n[hypervisor.qemu]\nkernel = 1\n", "# c\n\"x\n"} {
			_, err := parse("c.toml", []byte(s))
			require.Error(t, err)
			_, direct := toml.Decode(s, &doc{})
			require.Equal(t, tomlError("c.toml", []byte(s), direct).Error(), err.Error())
		}
	})
}

// FuzzCommentLines: taking whole-line comments out never changes what the
// TOML library reads, nor whether it fails.
func FuzzCommentLines(f *testing.F) {
	for _, s := range commentSeeds {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("testdata/configuration-qemu.toml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCommentLines(t, data)
	})
}
