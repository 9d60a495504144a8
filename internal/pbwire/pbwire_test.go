package pbwire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// collect returns the fields Range passes, or its error.
func collect(m []byte) ([]Field, error) {
	var fields []Field
	err := Range(m, func(f Field) error {
		fields = append(fields, f)
		return nil
	})
	return fields, err
}

// reference splits m with protowire, as protobuf-go stores unknown fields.
func reference(t *testing.T, m []byte) []Field {
	t.Helper()
	var fields []Field
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		require.GreaterOrEqual(t, n, 0)
		m = m[n:]
		f := Field{Num: int(num), Type: Type(typ)}
		switch typ {
		case protowire.VarintType:
			f.Value, n = protowire.ConsumeVarint(m)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(m)
			f.Value = uint64(v)
		case protowire.Fixed64Type:
			f.Value, n = protowire.ConsumeFixed64(m)
		case protowire.BytesType:
			f.Bytes, n = protowire.ConsumeBytes(m)
		case protowire.StartGroupType:
			f.Bytes, n = protowire.ConsumeGroup(num, m)
		}
		require.GreaterOrEqual(t, n, 0)
		m = m[n:]
		fields = append(fields, f)
	}
	return fields
}

func TestRange(t *testing.T) {
	var valid []byte
	valid = protowire.AppendTag(valid, 1, protowire.BytesType)
	valid = protowire.AppendString(valid, "runtimeoptions.v1.Options")
	valid = protowire.AppendTag(valid, 2, protowire.VarintType)
	valid = protowire.AppendVarint(valid, 1<<40)
	valid = protowire.AppendTag(valid, 3, protowire.Fixed32Type)
	valid = protowire.AppendFixed32(valid, 7)
	valid = protowire.AppendTag(valid, 4, protowire.Fixed64Type)
	valid = protowire.AppendFixed64(valid, 9)
	valid = protowire.AppendTag(valid, 5, protowire.StartGroupType)
	valid = protowire.AppendTag(valid, 6, protowire.StartGroupType)
	valid = protowire.AppendTag(valid, 7, protowire.VarintType)
	valid = protowire.AppendVarint(valid, 3)
	valid = protowire.AppendTag(valid, 6, protowire.EndGroupType)
	valid = protowire.AppendTag(valid, 5, protowire.EndGroupType)
	valid = protowire.AppendTag(valid, maxNumber, protowire.BytesType)
	valid = protowire.AppendBytes(valid, nil)

	fields, err := collect(valid)
	require.NoError(t, err)
	require.Equal(t, reference(t, valid), fields)
	require.Len(t, fields, 6)
	require.Equal(t, "runtimeoptions.v1.Options", string(fields[0].Bytes))
	require.Equal(t, uint64(1<<40), fields[1].Value)

	malformedCases := []struct {
		name string
		m    []byte
	}{
		{"truncated tag", []byte{0x80}},
		{"field number 0", []byte{0x02, 0x00}},
		{"field number above 2^29-1", protowire.AppendTag(nil, maxNumber+1, protowire.VarintType)},
		{"truncated varint", []byte{0x08, 0xff}},
		{"varint of 11 bytes", append([]byte{0x08}, bytes.Repeat([]byte{0xff}, 10)...)},
		{"length beyond the message", []byte{0x0a, 0x05, 'a'}},
		{"truncated fixed32", []byte{0x0d, 1, 2, 3}},
		{"truncated fixed64", []byte{0x09, 1, 2, 3, 4, 5, 6, 7}},
		{"end group at top level", []byte{0x0c}},
		{"group never ended", []byte{0x0b, 0x08, 0x01}},
		{"group ended by another", []byte{0x0b, 0x14}},
		{"reserved wire type 6", []byte{0x0e}},
		{"reserved wire type 7", []byte{0x0f}},
	}
	for _, tc := range malformedCases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, proto.Unmarshal(tc.m, &emptypb.Empty{}), "the reference accepts it")
			_, err := collect(tc.m)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}

	t.Run("stops at the callback's error", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		err := Range(valid, func(Field) error { calls++; return stop })
		require.Equal(t, stop, err)
		require.Equal(t, 1, calls)
	})
}

func TestGroupDepth(t *testing.T) {
	nest := func(depth int) []byte {
		var m []byte
		for range depth {
			m = protowire.AppendTag(m, 1, protowire.StartGroupType)
		}
		for range depth {
			m = protowire.AppendTag(m, 1, protowire.EndGroupType)
		}
		return m
	}
	for _, depth := range []int{maxGroupDepth + 1, maxGroupDepth + 2} {
		m := nest(depth)
		_, err := collect(m)
		require.Equal(t, proto.Unmarshal(m, &emptypb.Empty{}) == nil, err == nil, "depth %d: %v", depth, err)
	}
}

func TestAppend(t *testing.T) {
	var ours, ref []byte
	ours = AppendStringField(ours, 300, "topic")
	ours = AppendVarintField(ours, 1, 1<<63)
	ours = AppendBytesField(ours, 2, []byte{0, 1, 2})
	ours = AppendBytesField(ours, 3, nil)
	ref = protowire.AppendTag(ref, 300, protowire.BytesType)
	ref = protowire.AppendString(ref, "topic")
	ref = protowire.AppendTag(ref, 1, protowire.VarintType)
	ref = protowire.AppendVarint(ref, 1<<63)
	ref = protowire.AppendTag(ref, 2, protowire.BytesType)
	ref = protowire.AppendBytes(ref, []byte{0, 1, 2})
	ref = protowire.AppendTag(ref, 3, protowire.BytesType)
	ref = protowire.AppendBytes(ref, nil)
	require.Equal(t, ref, ours)
}

// FuzzRange: Range accepts exactly what proto.Unmarshal accepts and splits
// it into the fields protowire finds.
func FuzzRange(f *testing.F) {
	f.Add([]byte("\n\x19runtimeoptions.v1.Options\x12\x0c\x12\n/a/b.toml"))
	f.Add([]byte{0x0b, 0x13, 0x08, 0x01, 0x14, 0x0c, 0x10, 0x02})
	f.Add([]byte{0x0d, 1, 2, 3, 4, 0x09, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, m []byte) {
		fields, err := collect(m)
		refErr := proto.Unmarshal(m, &emptypb.Empty{})
		if (err == nil) != (refErr == nil) {
			t.Fatalf("Range: %v; proto.Unmarshal: %v", err, refErr)
		}
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, reference(t, m), fields)
	})
}
