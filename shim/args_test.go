package shim

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		argv   []string
		checks bool
		action string
		id     string
	}{
		{name: "containerd start", argv: []string{"shim", "-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "start"},
			checks: true, action: "start", id: "abc"},
		{name: "start with -debug", argv: []string{"shim", "-namespace", "ns", "-address", "a", "-publish-binary", "b", "-id", "abc", "-debug", "start"},
			checks: true, action: "start", id: "abc"},
		{name: "double-dash flags", argv: []string{"shim", "--namespace", "ns", "--id", "abc", "start"}, checks: true, action: "start", id: "abc"},
		{name: "delete", argv: []string{"shim", "-namespace", "ns", "-address", "a", "-publish-binary", "b", "-id", "abc", "-bundle", "/b", "delete"},
			action: "delete", id: "abc"},
		{name: "version", argv: []string{"shim", "-v"}},
		{name: "version wins over start", argv: []string{"shim", "-v", "-id", "abc", "start"}, action: "start", id: "abc"},
		{name: "info", argv: []string{"shim", "-info"}},
		{name: "unknown flag", argv: []string{"shim", "--version"}},
		{name: "unknown flag before start", argv: []string{"shim", "-new-flag", "x", "-id", "abc", "start"}},
		{name: "start without id (start refuses it)", argv: []string{"shim", "-namespace", "ns", "start"}, checks: true, action: "start"},
		{name: "server mode (no action)", argv: []string{"shim", "-namespace", "ns", "-id", "abc"}, id: "abc"},
		{name: "argv0 only", argv: []string{"shim"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := parseArgs(tc.argv)
			require.Equal(t, tc.checks, inv.checks())
			require.Equal(t, tc.action, inv.action)
			require.Equal(t, tc.id, inv.id)
		})
	}
}

func TestUncheckableStart(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"shim", "-new-flag", "x", "-id", "abc", "start"}, true},
		{[]string{"shim", "-namespace", "ns", "-id", "abc", "start"}, false},
		{[]string{"shim", "--version"}, false},
		{[]string{"shim", "-info"}, false},
	} {
		require.Equal(t, tc.want, parseArgs(tc.argv).uncheckableStart(tc.argv), "%v", tc.argv)
	}
}

func TestGetenvLastWins(t *testing.T) {
	s := &Shim{Env: []string{"A=1", "KATA_CONF_FILE=/x", "KATA_CONF_FILE_X=/y", "KATA_CONF_FILE=/z"}}
	require.Equal(t, "/z", s.getenv("KATA_CONF_FILE"))
	require.Equal(t, "", s.getenv("B"))
}
