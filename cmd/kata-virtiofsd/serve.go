package main

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// serve is where kata-virtiofsd serves the share with its own virtio-fs
// daemon: for protection recover, and when no upstream virtiofsd is
// configured. o is the parsed command line with SandboxID and Protection
// resolved and AnnounceSubmounts cleared for no-submounts; the socket is
// o.FD (listening, inherited from Kata) or o.SocketPath. It blocks while the
// share is served and returns when the front-end goes away.
//
// The daemon (vhost-user backend + passthrough file system) is not written
// yet; this is its one entry point.
func serve(ctx context.Context, o *virtiofsd.Options) error {
	return fmt.Errorf("kata-virtiofsd's own virtio-fs daemon is not available in this build: %w", errdefs.ErrNotImplemented)
}
