// Command containerd-shim-kata-v2 checks the guest kernel of a sandbox being
// created, refuses or warns as configured, and hands off to Kata's upstream
// shim. See package shim.
package main

import (
	"context"
	"io"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/shim"
)

func main() {
	// Libraries logging through logrus' standard logger must not reach
	// stdout or stderr, which containerd reads as start's answer.
	logrus.SetOutput(io.Discard)
	s := &shim.Shim{Args: os.Args, Env: os.Environ(), Stdin: os.Stdin, Stderr: os.Stderr}
	os.Exit(s.Run(context.Background()))
}
