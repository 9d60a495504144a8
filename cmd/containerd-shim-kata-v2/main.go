// Command containerd-shim-kata-v2 checks the guest kernel of a sandbox being
// created, refuses or warns as configured, and hands off to Kata's upstream
// shim. See package shim.
package main

import (
	"context"
	"io"
	"os"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/kata-submount-guard/kata-submount-guard/shim"
)

func main() {
	// Libraries logging through logrus' standard logger must not reach
	// stdout or stderr, which containerd reads as start's answer.
	logrus.SetOutput(io.Discard)
	s := &shim.Shim{Args: os.Args, Env: os.Environ(), Stdin: os.Stdin, Stderr: os.Stderr,
		NewLogger: func(debug bool, fifoPath string) (*log.Entry, func()) {
			logger, sinks := newLogger(debug, fifoPath)
			return logger, sinks.Close
		}}
	os.Exit(s.Run(context.Background()))
}
