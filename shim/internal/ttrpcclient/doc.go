// Package ttrpcclient makes one unary ttrpc call: the request frame out, the
// response frame back, on a connection the caller dialled. It is what the
// shim needs to forward an event to containerd, written against ttrpc's wire
// protocol (github.com/containerd/ttrpc, PROTOCOL.md, v1.2) so that the shim
// does not link ttrpc's client and with it the protobuf and gRPC runtimes,
// whose initialisation costs every start about half a millisecond. Tests call
// a real ttrpc server.
package ttrpcclient
