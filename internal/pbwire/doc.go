// Package pbwire reads and writes the protocol buffers wire format
// (protobuf.dev/programming-guides/encoding) for the few small messages
// kata-submount-guard exchanges with containerd: runtime options, the warning
// event and ttrpc's request and response. It replaces generated code and the
// protobuf runtime in the shim, whose package initialisation alone costs about
// half a millisecond at every start. Range accepts exactly the messages
// proto.Unmarshal accepts (tests compare the two), so a message that
// containerd's own decoder would reject is rejected here too.
package pbwire
