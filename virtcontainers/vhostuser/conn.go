package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// message is one frontend message with the fds that came with it. The
// receiver owns the fds: whatever a handler does not keep must be closed.
type message struct {
	header
	payload []byte
	fds     []int
}

func (m *message) closeFDs() {
	for _, fd := range m.fds {
		_ = unix.Close(fd)
	}
	m.fds = nil
}

// takeFD hands over the single fd a message must carry, or -1 when it carries
// none. More than one fd is an error (and all are closed).
func (m *message) takeFD() (int, error) {
	switch len(m.fds) {
	case 0:
		return -1, nil
	case 1:
		fd := m.fds[0]
		m.fds = nil
		return fd, nil
	}
	n := len(m.fds)
	m.closeFDs()
	return -1, fmt.Errorf("%s: %d fds, want at most 1: %w", requestName(m.Request), n, errdefs.ErrInvalidArgument)
}

// conn reads and writes vhost-user messages on a unix stream socket.
type conn struct {
	c   *net.UnixConn
	hdr [headerSize]byte
	oob []byte
	buf [maxPayload]byte
	out [headerSize + maxPayload]byte
}

func newConn(c *net.UnixConn) *conn {
	return &conn{c: c, oob: make([]byte, unix.CmsgSpace(4*(maxTableRegions+1)))}
}

// read returns the next message; io.EOF when the frontend closed the socket
// between messages. The payload aliases c's buffer until the next read.
func (c *conn) read() (message, error) {
	n, oobn, flags, _, err := c.c.ReadMsgUnix(c.hdr[:], c.oob)
	var m message
	if oobn > 0 {
		fds, perr := parseRights(c.oob[:oobn])
		m.fds = fds
		if perr != nil && err == nil {
			err = perr
		}
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = fmt.Errorf("vhost-user message carried more fds than %d: %w", maxTableRegions+1, errdefs.ErrInvalidArgument)
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	if err == nil && n < headerSize {
		_, err = io.ReadFull(c.c, c.hdr[n:])
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil {
		m.closeFDs()
		return message{}, err
	}
	h, err := decodeHeader(c.hdr[:])
	if err != nil {
		m.closeFDs()
		return message{}, err
	}
	m.header = h
	m.payload = c.buf[:h.Size]
	if _, err := io.ReadFull(c.c, m.payload); err != nil {
		m.closeFDs()
		return message{}, fmt.Errorf("vhost-user %s payload: %w", requestName(h.Request), err)
	}
	return m, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("vhost-user control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			for _, fd := range fds {
				_ = unix.Close(fd)
			}
			return nil, fmt.Errorf("vhost-user fds: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// reply sends the answer to request h.
func (c *conn) reply(h header, payload []byte) error {
	out := c.out[:headerSize+len(payload)]
	encodeHeader(out, header{Request: h.Request, Flags: flagVersion | flagReply, Size: uint32(len(payload))})
	copy(out[headerSize:], payload)
	_, err := c.c.Write(out)
	if err != nil {
		return fmt.Errorf("vhost-user reply to %s: %w", requestName(h.Request), err)
	}
	return nil
}
