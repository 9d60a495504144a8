package ttrpcclient

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unicode/utf8"

	"github.com/kata-submount-guard/kata-submount-guard/internal/pbwire"
)

const (
	headerLen = 10
	// maxMessage is ttrpc's limit on a frame's data.
	maxMessage = 4 << 20
	// Frame types.
	typeRequest  = 0x1
	typeResponse = 0x2
	// streamID is the first client stream; one call uses one connection.
	streamID = 1
)

// Field numbers of ttrpc's Request and Response (request.proto) and of
// google.rpc.Status.
const (
	requestService     = 1
	requestMethod      = 2
	requestPayload     = 3
	requestTimeoutNano = 4
	responseStatus     = 1
	responsePayload    = 2
	statusCode         = 1
	statusMessage      = 2
)

// ErrProtocol is wrapped by errors about a reply that is not a ttrpc
// response to the call.
var ErrProtocol = errors.New("ttrpc protocol error")

// StatusError is a call the server answered with a non-OK status.
type StatusError struct {
	Code    int32 // a google.rpc.Code
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("ttrpc status %s: %s", codeName(e.Code), e.Message)
}

// Call sends service/method with payload (a marshalled request message) on
// conn and returns the response payload. The context's deadline bounds the
// exchange and is sent as the request's timeout, as ttrpc's client does;
// cancelling the context interrupts it. A non-OK status is a *StatusError.
func Call(ctx context.Context, conn net.Conn, service, method string, payload []byte) ([]byte, error) {
	var req []byte
	req = pbwire.AppendStringField(req, requestService, service)
	req = pbwire.AppendStringField(req, requestMethod, method)
	if len(payload) > 0 {
		req = pbwire.AppendBytesField(req, requestPayload, payload)
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return nil, err
		}
		if timeout := time.Until(dl); timeout > 0 {
			req = pbwire.AppendVarintField(req, requestTimeoutNano, uint64(timeout.Nanoseconds()))
		}
	}
	if len(req) > maxMessage {
		return nil, fmt.Errorf("ttrpc request of %d bytes exceeds %d", len(req), maxMessage)
	}
	// Unblock reads and writes when ctx ends before its deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	frame := make([]byte, headerLen, headerLen+len(req))
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(req)))
	binary.BigEndian.PutUint32(frame[4:8], streamID)
	frame[8] = typeRequest
	frame = append(frame, req...)
	if _, err := conn.Write(frame); err != nil {
		return nil, ctxErr(ctx, err)
	}

	var hdr [headerLen]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	length := binary.BigEndian.Uint32(hdr[0:4])
	if length > maxMessage {
		return nil, fmt.Errorf("reply of %d bytes exceeds %d: %w", length, maxMessage, ErrProtocol)
	}
	if id, typ := binary.BigEndian.Uint32(hdr[4:8]), hdr[8]; id != streamID || typ != typeResponse {
		return nil, fmt.Errorf("reply of type %#x on stream %d, want a response on stream %d: %w", typ, id, streamID, ErrProtocol)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(conn, data); err != nil {
		return nil, ctxErr(ctx, err)
	}
	return parseResponse(data)
}

// parseResponse returns the payload of a ttrpc Response, or its status as a
// *StatusError when that is not OK.
func parseResponse(data []byte) ([]byte, error) {
	var status, reply []byte
	err := pbwire.Range(data, func(f pbwire.Field) error {
		switch {
		case f.Num == responseStatus && f.Type == pbwire.BytesType:
			status = f.Bytes
		case f.Num == responsePayload && f.Type == pbwire.BytesType:
			reply = f.Bytes
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reply: %w: %w", err, ErrProtocol)
	}
	var st StatusError
	err = pbwire.Range(status, func(f pbwire.Field) error {
		switch {
		case f.Num == statusCode && f.Type == pbwire.VarintType:
			st.Code = int32(f.Value)
		case f.Num == statusMessage && f.Type == pbwire.BytesType:
			if !utf8.Valid(f.Bytes) {
				return errors.New("status message is not UTF-8")
			}
			st.Message = string(f.Bytes)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reply status: %w: %w", err, ErrProtocol)
	}
	if st.Code != 0 {
		return nil, &st
	}
	return reply, nil
}

// ctxErr prefers the context's reason to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// codeName names a google.rpc.Code as gRPC's codes package prints it.
func codeName(c int32) string {
	names := [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
		"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
		"OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}
	if c >= 0 && int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("Code(%d)", c)
}
