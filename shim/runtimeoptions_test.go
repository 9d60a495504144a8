package shim

import (
	"errors"
	"slices"
	"strings"
	"testing"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	runcoptions "github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// optionsBytes marshals runtime options the way containerd writes them to a
// shim's stdin.
func optionsBytes(t *testing.T, typeURL string, m proto.Message) []byte {
	t.Helper()
	value, err := proto.Marshal(m)
	require.NoError(t, err)
	b, err := proto.Marshal(&anypb.Any{TypeUrl: typeURL, Value: value})
	require.NoError(t, err)
	return b
}

func TestDecodeRuntimeOptions(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		want string
		msg  string
	}{
		{"empty stdin", nil, "", ""},
		{"containerd type url", optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/a.toml"}), "/a.toml", ""},
		{"googleapis type url", optionsBytes(t, "type.googleapis.com/runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/b.toml"}), "/b.toml", ""},
		{"old cri type", optionsBytes(t, "cri.runtimeoptions.v1.Options", &runtimeoptions.Options{ConfigPath: "/c.toml"}), "/c.toml", ""},
		{"options without config path", optionsBytes(t, "runtimeoptions.v1.Options", &runtimeoptions.Options{TypeUrl: "x"}), "", ""},
		{"runc options", optionsBytes(t, "containerd.runc.v1.Options", &runcoptions.Options{SystemdCgroup: true}), "", ""},
		{"unknown type", optionsBytes(t, "example.Other", &runtimeoptions.Options{ConfigPath: "/d.toml"}), "",
			`runtime options of type "example.Other" are not supported (Kata's shim rejects them too); configure runtimeoptions.v1.Options: invalid argument`},
		{"garbage", []byte{0xff, 0xff, 0xff}, "", "runtime options on stdin are not a protobuf Any"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := DecodeRuntimeOptions(tc.data)
			require.Equal(t, tc.want, got.ConfigPath)
			if tc.msg != "" {
				require.ErrorContains(t, got.Err, tc.msg)
				require.True(t, errdefs.IsInvalidArgument(got.Err))
				return
			}
			require.NoError(t, got.Err)
		})
	}
}

// FuzzRuntimeOptions feeds arbitrary stdin bytes to the runtime-options
// decoder and compares it with decoding by the generated types: the same
// config path, or an error from both.
func FuzzRuntimeOptions(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\n\x19runtimeoptions.v1.Options\x12\x0c\x12\n/a/b.toml"))
	f.Add([]byte("\n\x1acontainerd.runc.v1.Options\x12\x02\x08\x01"))
	f.Add([]byte("\n\x1dcri.runtimeoptions.v1.Options\x12\x0f\n\x01x\x12\x02/c\x1a\x03\xff\xfe\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := runtimeOptionsConfigPath(data)
		want, refErr := referenceConfigPath(data)
		if err != nil {
			require.True(t, errdefs.IsInvalidArgument(err), "unclassified error: %v", err)
			require.Error(t, refErr, "only the hand decoder fails: %v", err)
			return
		}
		require.NoError(t, refErr, "only the generated types fail")
		require.Equal(t, want, got)
	})
}

// referenceConfigPath decodes runtime options with containerd's generated
// types, as Kata's shim does.
func referenceConfigPath(data []byte) (string, error) {
	if len(data) == 0 {
		return "", nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return "", err
	}
	name := a.GetTypeUrl()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	switch {
	case name == runtimeOptionsName || name == oldRuntimeOptionsName:
		var o runtimeoptions.Options
		if err := proto.Unmarshal(a.GetValue(), &o); err != nil {
			return "", err
		}
		return o.GetConfigPath(), nil
	case slices.Contains(ignoredOptionNames, name):
		return "", nil
	}
	return "", errors.New("unsupported type")
}
