package vhostusertest

import (
	"fmt"
	"net"
	"time"
)

// FSDevice is a virtio-fs device as QEMU sets one up with a single request
// queue: the high-priority queue 0 and request queue 1, in 32 MiB of guest
// memory.
type FSDevice struct {
	*Frontend
	Hiprio, Requests *Queue
}

const mib = 1 << 20

// DialFS connects to a daemon's listening socket, retrying for up to
// timeout while the daemon is not yet listening, and sets up an FSDevice
// with event idx and indirect descriptors, as QEMU does.
func DialFS(sock string, timeout time.Duration) (*FSDevice, error) {
	var conn *net.UnixConn
	for deadline := time.Now().Add(timeout); ; {
		var err error
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("daemon socket never accepted: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := NewFrontend(conn, []Region{{GPA: 0, Size: 32 * mib, UserAddr: 0x7f00_0000_0000}})
	if err != nil {
		conn.Close()
		return nil, err
	}
	d := &FSDevice{Frontend: f}
	if err := d.setup(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *FSDevice) setup() (err error) {
	if _, err = d.Negotiate(FeatureVersion1|FeatureEventIdx|FeatureIndirect, ProtocolReplyAck|ProtocolMQ); err != nil {
		return err
	}
	if err = d.SetMemTable(); err != nil {
		return err
	}
	if d.Hiprio, err = d.SetupQueue(0, 64, 0, 4*mib); err != nil {
		return err
	}
	d.Requests, err = d.SetupQueue(1, 256, 8*mib, 16*mib)
	return err
}

// Close stops the queues and hangs up, as QEMU does when the VM ends.
func (d *FSDevice) Close() {
	for _, q := range []*Queue{d.Hiprio, d.Requests} {
		if q != nil {
			q.Close()
		}
	}
	d.Frontend.Close()
}
