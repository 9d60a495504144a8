// Command sandboxd serves a share like kata-virtiofsd's serve mode, without
// the launcher's plan handling: the fsdaemon tests build it with
// CGO_ENABLED=0 to run the sandbox for real.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/fsdaemon"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/virtiofsd"
)

func main() {
	if fsdaemon.IsSandboxChild() {
		os.Exit(fsdaemon.RunSandboxChild())
	}
	fsdaemon.OneProcForLauncher() // as kata-virtiofsd's main does
	o, err := virtiofsd.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The launcher's decision, without a plan: our --guard-protection.
	o.Protection = o.Guard.Protection
	logger := logrus.New()
	logger.SetLevel(logrus.DebugLevel)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	fsdaemon.ApplyRuntimeDefaults(ctx, o) // as kata-virtiofsd's serve does
	if err := fsdaemon.Serve(ctx, o); err != nil {
		log.G(ctx).WithError(err).Error("sandboxd")
		os.Exit(1)
	}
}
