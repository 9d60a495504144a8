// Command kata-runtime is kata-submount-guard's extension of Kata's runtime
// CLI: check and env run Kata's own kata-runtime and add the guest kernel's
// FUSE submount fix status and the guard's decision to its output and exit
// status; guest-kernel inspect is ours. Each command is defined in its own
// file and listed in commands().
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

// revision is stamped by the Makefile (-X main.revision).
var revision = "unknown"

func main() {
	if err := run(context.Background()); err != nil {
		os.Exit(exitCode(os.Stderr, err))
	}
}

func run(ctx context.Context) error {
	return newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args)
}

// commands lists the subcommands; add new ones here.
func commands() []*cli.Command {
	return []*cli.Command{
		guestKernelCommand(),
		checkCommand(),
		envCommand(),
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "kata-runtime",
		Usage:     "Kata Containers runtime tools with the FUSE submount guard",
		Version:   revision,
		Flags:     kataGlobalFlags(),
		Commands:  commands(),
		Writer:    stdout,
		ErrWriter: stderr,
		// main turns errors into exit codes; the library must not exit.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// exitCode prints err (unless it carries no message) and returns the exit
// code it asks for (cli.Exit), or 1.
func exitCode(w io.Writer, err error) int {
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(w, "kata-runtime:", msg)
	}
	var coder cli.ExitCoder
	if errors.As(err, &coder) {
		return coder.ExitCode()
	}
	return 1
}
