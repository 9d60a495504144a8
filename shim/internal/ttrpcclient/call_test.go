package ttrpcclient

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// serve starts a real ttrpc server with the methods of service "test.Svc"
// on a unix socket and returns its path.
func serve(t *testing.T, methods map[string]ttrpc.Method) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	srv, err := ttrpc.NewServer()
	require.NoError(t, err)
	srv.Register("test.Svc", methods)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), l)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// raw carries bytes through ttrpc's proto codec: an Empty whose unknown
// fields are the bytes marshals to exactly them.
func raw(b []byte) *emptypb.Empty {
	m := &emptypb.Empty{}
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return m
}

func TestCall(t *testing.T) {
	var gotDeadline bool
	path := serve(t, map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var in wrapperspb.StringValue
			if err := unmarshal(&in); err != nil {
				return nil, err
			}
			_, gotDeadline = ctx.Deadline()
			return wrapperspb.String("echo: " + in.GetValue()), nil
		},
		"Empty": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return &emptypb.Empty{}, unmarshal(&emptypb.Empty{})
		},
		"Fail": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return nil, status.Error(codes.FailedPrecondition, "no such topic")
		},
		"Slow": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	req, err := proto.Marshal(wrapperspb.String("hello"))
	require.NoError(t, err)

	t.Run("reply payload, deadline sent", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reply, err := Call(ctx, dial(t, path), "test.Svc", "Echo", req)
		require.NoError(t, err)
		var out wrapperspb.StringValue
		require.NoError(t, proto.Unmarshal(reply, &out))
		require.Equal(t, "echo: hello", out.GetValue())
		require.True(t, gotDeadline, "the server did not see the request's timeout")
	})
	t.Run("empty request and reply, no deadline", func(t *testing.T) {
		reply, err := Call(context.Background(), dial(t, path), "test.Svc", "Empty", nil)
		require.NoError(t, err)
		require.Empty(t, reply)
	})
	t.Run("raw bytes as ttrpc's codec sends them", func(t *testing.T) {
		payload := []byte{0x0a, 0x03, 'a', 'b', 'c'}
		wire, err := proto.Marshal(raw(payload))
		require.NoError(t, err)
		require.Equal(t, payload, wire)
		_, err = Call(context.Background(), dial(t, path), "test.Svc", "Empty", payload)
		require.NoError(t, err)
	})
	t.Run("error status", func(t *testing.T) {
		_, err := Call(context.Background(), dial(t, path), "test.Svc", "Fail", req)
		var st *StatusError
		require.ErrorAs(t, err, &st)
		require.Equal(t, int32(codes.FailedPrecondition), st.Code)
		require.Equal(t, "ttrpc status FailedPrecondition: no such topic", err.Error())
	})
	t.Run("unknown method", func(t *testing.T) {
		_, err := Call(context.Background(), dial(t, path), "test.Svc", "Nope", nil)
		var st *StatusError
		require.ErrorAs(t, err, &st)
		require.Equal(t, int32(codes.Unimplemented), st.Code)
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Call(ctx, dial(t, path), "test.Svc", "Slow", nil)
		require.Error(t, err)
		require.Less(t, time.Since(start), 5*time.Second)
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := Call(ctx, dial(t, path), "test.Svc", "Slow", nil)
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestCallBadReply(t *testing.T) {
	cases := []struct {
		name  string
		reply []byte
	}{
		{"oversized", []byte{0x01, 0, 0, 0, 0, 0, 0, 1, typeResponse, 0}},
		{"other stream", []byte{0, 0, 0, 0, 0, 0, 0, 3, typeResponse, 0}},
		{"not a response", []byte{0, 0, 0, 0, 0, 0, 0, 1, typeRequest, 0}},
		{"malformed response", []byte{0, 0, 0, 1, 0, 0, 0, 1, typeResponse, 0, 0xff}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				buf := make([]byte, 512)
				_, _ = server.Read(buf)
				_, _ = server.Write(tc.reply)
			}()
			_, err := Call(context.Background(), client, "s", "m", nil)
			require.ErrorIs(t, err, ErrProtocol)
		})
	}
}

// FuzzParseResponse: any reply bytes give a payload, a status or a
// protocol error, never a panic; a reply ttrpc's own client reads gives the
// same payload or status here.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte{0x12, 0x02, 0x08, 0x01})
	f.Add([]byte{0x0a, 0x07, 0x08, 0x05, 0x12, 0x03, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, data []byte) {
		reply, err := parseResponse(data)
		var st *StatusError
		if err != nil && !errors.As(err, &st) {
			require.ErrorIs(t, err, ErrProtocol)
		}
		var resp ttrpc.Response
		if proto.Unmarshal(data, &resp) != nil {
			return
		}
		if code := resp.GetStatus().GetCode(); code != 0 {
			require.ErrorAs(t, err, &st)
			require.Equal(t, code, st.Code)
			require.Equal(t, resp.GetStatus().GetMessage(), st.Message)
			return
		}
		require.NoError(t, err)
		require.True(t, bytes.Equal(resp.GetPayload(), reply), "payload %q, ttrpc reads %q", reply, resp.GetPayload())
	})
}
