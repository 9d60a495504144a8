// Command kata-virtiofsd is configured as Kata's virtio_fs_daemon. It takes
// the virtiofsd command line Kata passes, reads the sandbox's plan and execs
// the upstream virtiofsd (Rust or QEMU's C daemon) with the plan's protection
// applied, or serves the share itself.
package main

import (
	"context"
	"os"

	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsdaemon"
)

// revision is set at build time (-X main.revision).
var revision = "unknown"

// defaultUpstreamVirtiofsd is config.DefaultUpstreamVirtiofsd, where
// kata-deploy installs virtiofsd ([submount_guard]'s default
// upstream_virtiofsd). It is written out because package config (Kata's
// TOML, annotations, their hashes) would add its dependencies to this
// binary, which is resident twice per sandbox; a test keeps the two equal.
const defaultUpstreamVirtiofsd = "/opt/kata/libexec/virtiofsd"

func main() {
	if fsdaemon.IsSandboxChild() {
		os.Exit(fsdaemon.RunSandboxChild())
	}
	fsdaemon.OneProcForLauncher()
	l := launcher{readPlan: plan.Read, defaultUpstream: defaultUpstreamVirtiofsd, serve: serve,
		stdout: os.Stdout, stderr: os.Stderr, revision: revision}
	if err := l.run(context.Background(), os.Args[1:]); err != nil {
		os.Exit(1)
	}
}
