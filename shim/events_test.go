package shim

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// TestForwardRequestWire decodes the hand-encoded request with containerd's
// generated types, as containerd does, and the payload with structpb.
func TestForwardRequestWire(t *testing.T) {
	pl := &plan.Plan{
		SandboxID: "sb-1", ConfigPath: "/etc/kata-containers/configuration.toml", Action: plan.Warn,
		Reason:     "guest kernel /k (6.1.69) lacks the FUSE submount fix; on_vulnerable = warn",
		Protection: protection.NoSubmounts,
		Kernel:     verdict.Report{Path: "/k", Version: "6.1.69", Release: "6.1.69", Verdict: verdict.Vulnerable, Evidence: verdict.EvidenceBTF},
	}
	at := time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.UTC)
	raw := forwardRequest("k8s.io", WarnTopic, at, warnFields(pl))

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
		"verdict": "vulnerable", "evidence": "btf", "action": "warn", "reason": pl.Reason,
		"config_path": "/etc/kata-containers/configuration.toml", "protection": "no-submounts", "unprotected": "false",
	}, payload.AsMap())
}

// forwarder is containerd's ttrpc events service as a test records it.
type forwarder struct {
	got chan *eventsapi.ForwardRequest
	err error
}

func (f *forwarder) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	f.got <- req
	return &emptypb.Empty{}, f.err
}

// serveEvents serves containerd's ttrpc events service on a socket of the
// test, answering fail, and returns what it records and its address as
// TTRPC_ADDRESS gives it.
func serveEvents(t *testing.T, fail error) (*forwarder, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv, err := ttrpc.NewServer()
	require.NoError(t, err)
	f := &forwarder{got: make(chan *eventsapi.ForwardRequest, 1), err: fail}
	eventsapi.RegisterEventsService(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(context.Background(), l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return f, "unix://" + path
}

// TestPublishWarning publishes to a ttrpc server serving containerd's
// generated events service, as containerd's TTRPC_ADDRESS does.
func TestPublishWarning(t *testing.T) {
	pl := &plan.Plan{SandboxID: "sb-2", Action: plan.Warn, Reason: "r",
		Kernel: verdict.Report{Path: "/k", Verdict: verdict.Unknown, Evidence: verdict.EvidenceNone}}
	cases := []struct {
		name    string
		fail    error
		wantErr string
	}{
		{"forwarded", nil, ""},
		{"refused by the service", status.Error(codes.NotFound, "namespace gone"), "publish /kata/submount-guard/warn: ttrpc status NotFound: namespace gone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, address := serveEvents(t, tc.fail)
			err := publishWarning(context.Background(), address, "k8s.io", pl)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
			}
			req := <-f.got
			require.Equal(t, "k8s.io", req.GetEnvelope().GetNamespace())
			require.Equal(t, WarnTopic, req.GetEnvelope().GetTopic())
			var payload structpb.Struct
			require.NoError(t, proto.Unmarshal(req.GetEnvelope().GetEvent().GetValue(), &payload))
			require.Equal(t, "sb-2", payload.AsMap()["sandbox_id"])
		})
	}
	t.Run("no address", func(t *testing.T) {
		require.EqualError(t, publishWarning(context.Background(), "", "k8s.io", pl), "publish /kata/submount-guard/warn: TTRPC_ADDRESS is not set")
	})
}
