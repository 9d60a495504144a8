// Command containerd-shim-standin-v2 is the STAND-IN delegate shim of the
// integration tests: containerd's runc shim, made to accept Kata's runtime
// options and to record what it was given. It is not Kata and runs no VM.
package main

import (
	"context"

	"github.com/containerd/containerd/runtime/v2/shim"

	"github.com/kata-submount-guard/kata-submount-guard/test/standin-shim/standin"
)

func main() {
	standin.RegisterTaskPlugin()
	shim.RunManager(context.Background(), standin.NewManager(standin.RuntimeName))
}
