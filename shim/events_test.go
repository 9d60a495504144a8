package shim

import (
	"testing"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kata-submount-guard/kata-submount-guard/hooks"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel"
)

// TestForwardRequestWire decodes the hand-encoded request with containerd's
// generated types, as containerd does, and the payload with structpb.
func TestForwardRequestWire(t *testing.T) {
	plan := &hooks.Plan{
		SandboxID: "sb-1", ConfigPath: "/etc/kata-containers/configuration.toml", Action: hooks.Warn,
		Reason:     "guest kernel /k (6.1.69) lacks the FUSE submount fix; on_vulnerable = warn",
		Protection: hooks.ProtectNoSubmounts,
		Kernel:     guestkernel.Report{Path: "/k", Version: "6.1.69", Release: "6.1.69", Verdict: guestkernel.Vulnerable, Evidence: guestkernel.EvidenceBTF},
	}
	at := time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.UTC)
	raw := forwardRequest("k8s.io", WarnTopic, at, warnFields(plan))

	var req eventsapi.ForwardRequest
	require.NoError(t, proto.Unmarshal(raw, &req))
	env := req.GetEnvelope()
	require.Equal(t, "k8s.io", env.GetNamespace())
	require.Equal(t, WarnTopic, env.GetTopic())
	require.True(t, at.Equal(env.GetTimestamp().AsTime()))
	require.Equal(t, "google.protobuf.Struct", env.GetEvent().GetTypeUrl())
	var payload structpb.Struct
	require.NoError(t, proto.Unmarshal(env.GetEvent().GetValue(), &payload))
	require.Equal(t, map[string]any{
		"sandbox_id": "sb-1", "kernel": "/k", "version": "6.1.69", "release": "6.1.69",
		"verdict": "vulnerable", "evidence": "btf", "action": "warn", "reason": plan.Reason,
		"config_path": "/etc/kata-containers/configuration.toml", "protection": "no-submounts",
	}, payload.AsMap())

	// What ttrpc puts on the wire for the carrier message.
	carrier := &emptypb.Empty{}
	carrier.ProtoReflect().SetUnknown(raw)
	wire, err := proto.Marshal(carrier)
	require.NoError(t, err)
	require.Equal(t, raw, wire)
}
