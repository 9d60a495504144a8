package shim

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kata-submount-guard/kata-submount-guard/hooks"
)

// WarnTopic is the containerd event topic of a sandbox that starts with a
// guest kernel the policy warns about.
const WarnTopic = "/kata/submount-guard/warn"

// publishTimeout bounds the whole publication: start must not hang on it.
const publishTimeout = 2 * time.Second

// warnPayload is the event body. A google.protobuf.Struct, because every
// containerd client can decode it without our types: `ctr events` shows it.
func warnPayload(p *hooks.Plan) (*structpb.Struct, error) {
	return structpb.NewStruct(map[string]any{
		"sandbox_id":  p.SandboxID,
		"kernel":      p.Kernel.Path,
		"version":     p.Kernel.Version,
		"release":     p.Kernel.Release,
		"verdict":     string(p.Kernel.Verdict),
		"evidence":    string(p.Kernel.Evidence),
		"action":      string(p.Action),
		"reason":      p.Reason,
		"config_path": p.ConfigPath,
		"protection":  string(p.Protection),
	})
}

// publishWarning forwards the warning event to containerd's ttrpc events
// service at address (TTRPC_ADDRESS), in namespace ns.
func publishWarning(ctx context.Context, address, ns string, p *hooks.Plan) error {
	if address == "" {
		return fmt.Errorf("publish %s: TTRPC_ADDRESS is not set", WarnTopic)
	}
	payload, err := warnPayload(p)
	if err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	value, err := proto.Marshal(payload)
	if err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	// The type URL is the bare message name, as containerd's typeurl
	// writes it and as its clients (ctr events) look it up.
	event := &anypb.Any{TypeUrl: string(payload.ProtoReflect().Descriptor().FullName()), Value: value}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	// containerd files the event under the envelope's namespace.
	_, err = eventsapi.NewEventsClient(client).Forward(ctx, &eventsapi.ForwardRequest{
		Envelope: &types.Envelope{
			Timestamp: timestamppb.New(time.Now()),
			Namespace: ns,
			Topic:     WarnTopic,
			Event:     event,
		},
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	return nil
}
