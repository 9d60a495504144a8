package buildinfo

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPick(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	cases := []struct {
		name  string
		stamp string
		bi    *debug.BuildInfo
		want  string
	}{
		{"the Makefile's stamp wins", "1c3fce3", vcs("vcs.revision", "abc"), "1c3fce3"},
		{"no stamp: the toolchain's record", "", vcs("vcs.revision", "abc", "vcs.modified", "false"), "abc"},
		{"the Makefile outside git stamps unknown", "unknown", vcs("vcs.revision", "abc"), "abc"},
		{"uncommitted changes", "", vcs("vcs.revision", "abc", "vcs.modified", "true"), "abc-modified"},
		{"nothing recorded", "", vcs(), ""},
		{"no build info", "", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, pick(tc.stamp, tc.bi))
		})
	}
}
