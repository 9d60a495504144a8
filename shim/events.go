package shim

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/hooks"
	"github.com/kata-submount-guard/kata-submount-guard/internal/pbwire"
	"github.com/kata-submount-guard/kata-submount-guard/shim/internal/ttrpcclient"
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
// Encoded by hand (package pbwire) rather than with containerd's generated
// API types and structpb: the protobuf runtime costs about half a
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
		value = pbwire.AppendTag(value, 3, pbwire.BytesType)
		value = pbwire.AppendString(value, fields[k])
		var entry []byte // map<string, Value> entry
		entry = pbwire.AppendTag(entry, 1, pbwire.BytesType)
		entry = pbwire.AppendString(entry, k)
		entry = pbwire.AppendTag(entry, 2, pbwire.BytesType)
		entry = pbwire.AppendBytes(entry, value)
		st = pbwire.AppendTag(st, 1, pbwire.BytesType)
		st = pbwire.AppendBytes(st, entry)
	}
	var anyMsg []byte // google.protobuf.Any
	anyMsg = pbwire.AppendTag(anyMsg, 1, pbwire.BytesType)
	anyMsg = pbwire.AppendString(anyMsg, structTypeURL)
	anyMsg = pbwire.AppendTag(anyMsg, 2, pbwire.BytesType)
	anyMsg = pbwire.AppendBytes(anyMsg, st)
	var ts []byte // google.protobuf.Timestamp
	ts = pbwire.AppendTag(ts, 1, pbwire.VarintType)
	ts = pbwire.AppendVarint(ts, uint64(at.Unix()))
	ts = pbwire.AppendTag(ts, 2, pbwire.VarintType)
	ts = pbwire.AppendVarint(ts, uint64(at.Nanosecond()))
	var env []byte // containerd.types.Envelope
	env = pbwire.AppendTag(env, 1, pbwire.BytesType)
	env = pbwire.AppendBytes(env, ts)
	env = pbwire.AppendTag(env, 2, pbwire.BytesType)
	env = pbwire.AppendString(env, ns)
	env = pbwire.AppendTag(env, 3, pbwire.BytesType)
	env = pbwire.AppendString(env, topic)
	env = pbwire.AppendTag(env, 4, pbwire.BytesType)
	env = pbwire.AppendBytes(env, anyMsg)
	var req []byte // ForwardRequest{envelope = 1}
	req = pbwire.AppendTag(req, 1, pbwire.BytesType)
	req = pbwire.AppendBytes(req, env)
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
	defer conn.Close()
	// containerd files the event under the envelope's namespace. The reply
	// is an Empty.
	if _, err := ttrpcclient.Call(ctx, conn, eventsService, eventsForward, forwardRequest(ns, WarnTopic, time.Now(), warnFields(p))); err != nil {
		return fmt.Errorf("publish %s: %w", WarnTopic, err)
	}
	return nil
}
