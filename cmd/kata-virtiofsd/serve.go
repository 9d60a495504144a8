package main

import (
	"context"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsdaemon"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

// serve is where kata-virtiofsd serves the share with its own virtio-fs
// daemon: for protection recover, and when no upstream virtiofsd is
// configured. o is the parsed command line with SandboxID and Protection
// resolved and AnnounceSubmounts cleared for no-submounts; the socket is
// o.FD (listening, inherited from Kata) or o.SocketPath. It blocks while the
// share is served and returns when the front-end goes away.
//
// The daemon is fsdaemon.Serve (vhost-user backend + passthrough file
// system); its sandbox re-executes this binary, which main hands to
// fsdaemon.RunSandboxChild.
func serve(ctx context.Context, o *virtiofsd.Options) error {
	fsdaemon.ApplyRuntimeDefaults(ctx, o)
	return fsdaemon.Serve(ctx, o)
}
