package shim

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
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
func warnFields(p *plan.Plan) map[string]string {
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
		"unprotected": strconv.FormatBool(p.Unprotected),
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
		value = pbwire.AppendStringField(value, 3, fields[k])
		var entry []byte // map<string, Value> entry
		entry = pbwire.AppendStringField(entry, 1, k)
		entry = pbwire.AppendBytesField(entry, 2, value)
		st = pbwire.AppendBytesField(st, 1, entry)
	}
	var anyMsg []byte // google.protobuf.Any
	anyMsg = pbwire.AppendStringField(anyMsg, 1, structTypeURL)
	anyMsg = pbwire.AppendBytesField(anyMsg, 2, st)
	var ts []byte // google.protobuf.Timestamp
	ts = pbwire.AppendVarintField(ts, 1, uint64(at.Unix()))
	ts = pbwire.AppendVarintField(ts, 2, uint64(at.Nanosecond()))
	var env []byte // containerd.types.Envelope
	env = pbwire.AppendBytesField(env, 1, ts)
	env = pbwire.AppendStringField(env, 2, ns)
	env = pbwire.AppendStringField(env, 3, topic)
	env = pbwire.AppendBytesField(env, 4, anyMsg)
	var req []byte // ForwardRequest{envelope = 1}
	req = pbwire.AppendBytesField(req, 1, env)
	return req
}

// publishWarning forwards the warning event to containerd's ttrpc events
// service at address (TTRPC_ADDRESS), in namespace ns.
func publishWarning(ctx context.Context, address, ns string, p *plan.Plan) error {
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
