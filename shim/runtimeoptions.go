package shim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/pbwire"
)

// Message names of the runtime options containerd may hand a shim. Kata's
// shim takes ConfigPath from the first two and ignores the runc ones (it
// registers them so that decoding them succeeds); anything else fails its
// create, and our start.
const (
	runtimeOptionsName    = "runtimeoptions.v1.Options"
	oldRuntimeOptionsName = "cri.runtimeoptions.v1.Options" // containerd 1.4.3/1.4.4
)

var ignoredOptionNames = []string{
	"containerd.runc.v1.Options", "containerd.runc.v1.CheckpointOptions", "containerd.runc.v1.ProcessDetails",
	"containerd.linux.runc.RuncOptions", "containerd.linux.runc.CreateOptions",
	"containerd.linux.runc.CheckpointOptions", "containerd.linux.runc.ProcessDetails",
}

// Field numbers of google.protobuf.Any and runtimeoptions.v1.Options
// (containerd's pkg/runtimeoptions/v1/api.proto).
const (
	anyTypeURLField     = 1 // string
	anyValueField       = 2 // bytes
	optionsTypeURLField = 1 // string
	optionsConfigField  = 2 // string; config_body (3, bytes) is not read
)

// DecodeRuntimeOptions decodes the runtime options containerd writes to a
// shim's stdin at start for config.Sources; see runtimeOptionsConfigPath.
func DecodeRuntimeOptions(data []byte) config.RuntimeOptions {
	path, err := runtimeOptionsConfigPath(data)
	return config.RuntimeOptions{ConfigPath: path, Err: err}
}

// runtimeOptionsConfigPath returns the ConfigPath carried by the runtime
// options containerd writes to a shim's stdin at start: a marshalled
// google.protobuf.Any holding runtimeoptions.v1.Options. Empty input (stdin
// is /dev/null when no options are configured) and runc options give "".
// Decoded by hand (package pbwire) so the shim does not link the protobuf
// runtime; it accepts and rejects what proto.Unmarshal does
// (FuzzRuntimeOptions compares them).
func runtimeOptionsConfigPath(data []byte) (string, error) {
	if len(data) == 0 {
		return "", nil
	}
	fields, err := lengthDelimited(data, anyTypeURLField)
	if err != nil {
		return "", fmt.Errorf("runtime options on stdin are not a protobuf Any: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	typeURL := string(fields[anyTypeURLField])
	name := typeURL
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	switch {
	case name == runtimeOptionsName || name == oldRuntimeOptionsName:
		opts, err := lengthDelimited(fields[anyValueField], optionsTypeURLField, optionsConfigField)
		if err != nil {
			return "", fmt.Errorf("runtime options %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
		return string(opts[optionsConfigField]), nil
	case slices.Contains(ignoredOptionNames, name):
		return "", nil
	default:
		return "", fmt.Errorf("runtime options of type %q are not supported (Kata's shim rejects them too); configure %s: %w",
			typeURL, runtimeOptionsName, errdefs.ErrInvalidArgument)
	}
}

// errInvalidUTF8 is proto.Unmarshal's objection to a proto3 string.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// lengthDelimited returns the last value of each length-delimited field of
// message m by number, as proto.Unmarshal sets them: an occurrence of
// another wire type is an unknown field, and the fields numbered in
// utf8Fields (proto3 strings) must hold UTF-8.
func lengthDelimited(m []byte, utf8Fields ...int) (map[int][]byte, error) {
	values := map[int][]byte{}
	err := pbwire.Range(m, func(f pbwire.Field) error {
		if f.Type != pbwire.BytesType {
			return nil
		}
		for _, num := range utf8Fields {
			if f.Num == num && !utf8.Valid(f.Bytes) {
				return fmt.Errorf("field %d: %w", f.Num, errInvalidUTF8)
			}
		}
		values[f.Num] = f.Bytes
		return nil
	})
	return values, err
}
