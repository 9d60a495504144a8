package shim

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kata-submount-guard/kata-submount-guard/hooks"
)

// WarnTopic is the containerd event topic of a sandbox that starts with a
// guest kernel the policy warns about.
const WarnTopic = "/kata/submount-guard/warn"

// publishTimeout bounds the whole publication: start must not hang on it.
const publishTimeout = 2 * time.Second

// The ttrpc method containerd's shims forward events to
// (api/services/ttrpc/events/v1/events.proto).
const (
	eventsService = "containerd.services.events.ttrpc.v1.Events"
	eventsForward = "Forward"
	// structTypeURL names the payload the way containerd's typeurl does:
	// the bare message name, which `ctr events` resolves.
	structTypeURL = "google.protobuf.Struct"
)

// warnFields is the event body: sandbox, kernel and verdict, all strings.
func warnFields(p *hooks.Plan) map[string]string {
	return map[string]string{
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
	}
}

// forwardRequest encodes containerd's events.ttrpc.v1.ForwardRequest with
// an Envelope whose event is a google.protobuf.Struct of string fields.
// Encoded by hand (protobuf wire format) rather than with containerd's
// generated API types and structpb: those packages cost a third of a
// millisecond of initialisation at every start, for an event sent only when
// warning. TestForwardRequestWire decodes it with the generated types.
func forwardRequest(ns, topic string, at time.Time, fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var st []byte // google.protobuf.Struct
	for _, k := range keys {
		var value []byte // google.protobuf.Value{string_value = 3}
		value = protowire.AppendTag(value, 3, protowire.BytesType)
		value = protowire.AppendString(value, fields[k])
		var entry []byte // map<string, Value> entry
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, k)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, value)
		st = protowire.AppendTag(st, 1, protowire.BytesType)
		st = protowire.AppendBytes(st, entry)
	}
	var anyMsg []byte // google.protobuf.Any
	anyMsg = protowire.AppendTag(anyMsg, 1, protowire.BytesType)
	anyMsg = protowire.AppendString(anyMsg, structTypeURL)
	anyMsg = protowire.AppendTag(anyMsg, 2, protowire.BytesType)
	anyMsg = protowire.AppendBytes(anyMsg, st)
	var ts []byte // google.protobuf.Timestamp
	ts = protowire.AppendTag(ts, 1, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(at.Unix()))
	ts = protowire.AppendTag(ts, 2, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(at.Nanosecond()))
	var env []byte // containerd.types.Envelope
	env = protowire.AppendTag(env, 1, protowire.BytesType)
	env = protowire.AppendBytes(env, ts)
	env = protowire.AppendTag(env, 2, protowire.BytesType)
	env = protowire.AppendString(env, ns)
	env = protowire.AppendTag(env, 3, protowire.BytesType)
	env = protowire.AppendString(env, topic)
	env = protowire.AppendTag(env, 4, protowire.BytesType)
	env = protowire.AppendBytes(env, anyMsg)
	var req []byte // ForwardRequest{envelope = 1}
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, env)
	return req
}

// publishWarning forwards the warning event to containerd's ttrpc events
// service at address (TTRPC_ADDRESS), in namespace ns.
func publishWarning(ctx context.Context, address, ns string, p *hooks.Plan) error {
	if address == "" {
		return fmt.Errorf("publish %s: TTRPC_ADDRESS is not set", WarnTopic)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	// ttrpc marshals proto messages; an Empty carrying the request as its
	// unknown fields marshals to exactly those bytes. The reply is Empty.
	req := &emptypb.Empty{}
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(forwardRequest(ns, WarnTopic, time.Now(), warnFields(p))))
	// containerd files the event under the envelope's namespace.
	if err := client.Call(ctx, eventsService, eventsForward, req, &emptypb.Empty{}); err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	return nil
}
