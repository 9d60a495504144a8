package pbwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Type is a wire type.
type Type uint8

// The wire types.
const (
	VarintType     Type = 0
	Fixed64Type    Type = 1
	BytesType      Type = 2
	StartGroupType Type = 3
	EndGroupType   Type = 4
	Fixed32Type    Type = 5
)

// Field numbers proto.Unmarshal accepts: 1 to 2^29-1 at a message's top
// level; inside a group it only rejects what does not fit an int32.
const (
	maxNumber      = 1<<29 - 1
	maxGroupNumber = math.MaxInt32
	// maxGroupDepth is protobuf-go's recursion limit for nested groups.
	maxGroupDepth = 10000
)

// ErrMalformed is wrapped by every error about bytes that are not a
// well-formed message.
var ErrMalformed = errors.New("malformed protobuf message")

// Field is one field of a message. Value holds a varint or a fixed-size
// value; Bytes holds a length-delimited value (a slice of the message) or,
// for a group, its encoded fields.
type Field struct {
	Num   int
	Type  Type
	Value uint64
	Bytes []byte
}

// Range calls fn with each field of message m, in order, and stops at the
// first error fn returns, which Range returns unchanged. Groups are passed as
// one field. Bytes that proto.Unmarshal would reject (a truncated value, a
// bad field number, an unknown wire type, an unbalanced group) stop Range
// with an error wrapping ErrMalformed.
func Range(m []byte, fn func(Field) error) error {
	for len(m) > 0 {
		num, typ, n, err := consumeTag(m, maxNumber)
		if err != nil {
			return err
		}
		m = m[n:]
		f := Field{Num: num, Type: typ}
		switch typ {
		case VarintType:
			f.Value, n = binary.Uvarint(m)
			if n <= 0 {
				return malformed("field %d: bad varint", num)
			}
		case Fixed32Type:
			if len(m) < 4 {
				return malformed("field %d: truncated fixed32", num)
			}
			f.Value, n = uint64(binary.LittleEndian.Uint32(m)), 4
		case Fixed64Type:
			if len(m) < 8 {
				return malformed("field %d: truncated fixed64", num)
			}
			f.Value, n = binary.LittleEndian.Uint64(m), 8
		case BytesType:
			f.Bytes, n, err = consumeBytes(m)
			if err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
		case StartGroupType:
			body, end, err := skipGroup(num, m)
			if err != nil {
				return fmt.Errorf("field %d: %w", num, err)
			}
			f.Bytes, n = m[:body], end
		case EndGroupType:
			return malformed("field %d: end of a group that was not started", num)
		default:
			return malformed("field %d: reserved wire type %d", num, typ)
		}
		m = m[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrMalformed)...)
}

// consumeTag reads a field's tag; numbers above max are malformed.
func consumeTag(m []byte, max uint64) (num int, typ Type, n int, err error) {
	tag, n := binary.Uvarint(m)
	if n <= 0 {
		return 0, 0, 0, malformed("bad tag")
	}
	if tag>>3 < 1 || tag>>3 > max {
		return 0, 0, 0, malformed("field number %d out of range", tag>>3)
	}
	return int(tag >> 3), Type(tag & 7), n, nil
}

// consumeBytes reads a length-delimited value.
func consumeBytes(m []byte) ([]byte, int, error) {
	l, n := binary.Uvarint(m)
	if n <= 0 {
		return nil, 0, malformed("bad length")
	}
	if l > uint64(len(m)-n) {
		return nil, 0, malformed("length %d beyond the message", l)
	}
	return m[n : n+int(l)], n + int(l), nil
}

// skipGroup finds the end of group num whose fields start m: body is the
// length of its fields, end what follows its end tag.
func skipGroup(num int, m []byte) (body, end int, err error) {
	open := []int{num}
	off := 0
	for {
		if len(open) > maxGroupDepth+1 {
			return 0, 0, malformed("groups nested deeper than %d", maxGroupDepth)
		}
		tagAt := off
		n2, typ, n, err := consumeTag(m[off:], maxGroupNumber)
		if err != nil {
			return 0, 0, err
		}
		off += n
		rest := m[off:]
		switch typ {
		case VarintType:
			if _, n = binary.Uvarint(rest); n <= 0 {
				return 0, 0, malformed("field %d: bad varint", n2)
			}
		case Fixed32Type:
			if n = 4; len(rest) < n {
				return 0, 0, malformed("field %d: truncated fixed32", n2)
			}
		case Fixed64Type:
			if n = 8; len(rest) < n {
				return 0, 0, malformed("field %d: truncated fixed64", n2)
			}
		case BytesType:
			if _, n, err = consumeBytes(rest); err != nil {
				return 0, 0, err
			}
		case StartGroupType:
			open = append(open, n2)
			n = 0
		case EndGroupType:
			if open[len(open)-1] != n2 {
				return 0, 0, malformed("group %d ended by the end of group %d", open[len(open)-1], n2)
			}
			if open = open[:len(open)-1]; len(open) == 0 {
				return tagAt, off, nil
			}
			n = 0
		default:
			return 0, 0, malformed("field %d: reserved wire type %d", n2, typ)
		}
		off += n
	}
}

// AppendVarintField appends field num as a varint holding v.
func AppendVarintField(b []byte, num int, v uint64) []byte {
	return binary.AppendUvarint(appendTag(b, num, VarintType), v)
}

// AppendBytesField appends field num as the length-delimited value v: a
// bytes field or an embedded message.
func AppendBytesField(b []byte, num int, v []byte) []byte {
	b = binary.AppendUvarint(appendTag(b, num, BytesType), uint64(len(v)))
	return append(b, v...)
}

// AppendStringField appends field num as the length-delimited value v.
func AppendStringField(b []byte, num int, v string) []byte {
	b = binary.AppendUvarint(appendTag(b, num, BytesType), uint64(len(v)))
	return append(b, v...)
}

func appendTag(b []byte, num int, typ Type) []byte {
	return binary.AppendUvarint(b, uint64(num)<<3|uint64(typ))
}
