package config

import (
	"fmt"
	"strings"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
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

// RuntimeOptionsConfigPath returns the ConfigPath carried by the runtime
// options containerd writes to a shim's stdin at start: a marshalled
// google.protobuf.Any holding runtimeoptions.v1.Options. Empty input (stdin
// is /dev/null when no options are configured) and runc options give "".
func RuntimeOptionsConfigPath(data []byte) (string, error) {
	if len(data) == 0 {
		return "", nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return "", fmt.Errorf("runtime options on stdin are not a protobuf Any: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	name := a.GetTypeUrl()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	switch {
	case name == runtimeOptionsName || name == oldRuntimeOptionsName:
		var o runtimeoptions.Options
		if err := proto.Unmarshal(a.GetValue(), &o); err != nil {
			return "", fmt.Errorf("runtime options %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
		}
		return o.GetConfigPath(), nil
	case contains(ignoredOptionNames, name):
		return "", nil
	default:
		return "", fmt.Errorf("runtime options of type %q are not supported (Kata's shim rejects them too); configure %s: %w",
			a.GetTypeUrl(), runtimeOptionsName, errdefs.ErrInvalidArgument)
	}
}
