package config

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// ValueError is a configuration value that is not allowed. It names the file,
// the key, the bad value and what is allowed, and wraps
// errdefs.ErrInvalidArgument.
type ValueError struct {
	File    string
	Table   string // "submount_guard", "hypervisor.qemu", ...
	Key     string
	Value   any
	Reason  string
	Allowed []string
}

func (e *ValueError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: [%s] %s = %s", e.File, e.Table, e.Key, formatValue(e.Value))
	switch {
	case e.Reason != "":
		b.WriteString(": " + e.Reason)
	default:
		b.WriteString(": invalid value")
	}
	if len(e.Allowed) > 0 {
		b.WriteString("; allowed: " + strings.Join(e.Allowed, ", "))
	}
	return b.String()
}

func (e *ValueError) Unwrap() error { return errdefs.ErrInvalidArgument }

// SyntaxError is a TOML file that does not parse, or a value whose TOML type
// differs from the one Kata expects. Line and Col are 1-based; Col is 0 when
// the TOML library gives no column.
type SyntaxError struct {
	File string
	Line int
	Col  int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("%s:%d:%d: invalid TOML: %s", e.File, e.Line, e.Col, e.Msg)
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: invalid TOML: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: invalid TOML: %s", e.File, e.Msg)
}

func (e *SyntaxError) Unwrap() error { return errdefs.ErrInvalidArgument }
