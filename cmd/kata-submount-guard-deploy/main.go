// Command kata-submount-guard-deploy is the entrypoint of the
// kata-submount-guard DaemonSet image: `install` guards the node's Kata
// runtimes once kata-deploy has installed them and keeps them guarded until
// SIGTERM, `uninstall` restores everything, `status` reports (exit 1 when a
// Kata shim is not guarded). Configuration comes from the environment; see
// package deploy/installer and README "Install on Kubernetes".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/containerd/log"

	"github.com/kata-submount-guard/kata-submount-guard/deploy/installer"
)

// revision is stamped by the Makefile (-X main.revision).
var revision = "unknown"

const usage = `usage: kata-submount-guard-deploy install | uninstall [--wait] | status [--json]

  install    wait for katacontainers.io/kata-runtime=true, guard every Kata
             runtime, label the node, re-apply until SIGTERM
  uninstall  restore containerd's and Kata's configuration, remove our
             files and labels; --wait then waits for SIGTERM (a DaemonSet)
  status     print what is installed and protected; exit 1 if a Kata shim
             is not guarded
`

// errUnguarded makes status exit 1 without another message.
var errUnguarded = errors.New("")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		if err != errUnguarded {
			fmt.Fprintln(os.Stderr, "kata-submount-guard-deploy:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	flag := map[string]string{"status": "--json", "uninstall": "--wait"}
	if len(args) == 0 || len(args) > 2 || (len(args) == 2 && flag[args[0]] != args[1]) {
		return fmt.Errorf("%s", usage)
	}
	opt, err := installer.OptionsFromEnv(getenv)
	if err != nil {
		return err
	}
	if opt.NodeName != "" && getenv("KUBERNETES_SERVICE_HOST") != "" {
		c, err := installer.InClusterClient()
		if err != nil {
			return err
		}
		opt.Nodes = c
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("node", opt.NodeName))
	in := installer.New(opt)
	switch args[0] {
	case "install":
		if opt.Nodes == nil {
			log.G(ctx).Warn("NODE_NAME or the in-cluster API is missing: not waiting for kata-deploy's label, publishing no node labels")
		}
		log.G(ctx).WithField("revision", revision).Info("kata-submount-guard-deploy install")
		return in.Run(ctx)
	case "uninstall":
		if err := in.Uninstall(ctx); err != nil {
			return err
		}
		if len(args) == 2 {
			log.G(ctx).Info("uninstalled; waiting for SIGTERM")
			<-ctx.Done()
		}
		return nil
	case "status":
		reports, err := in.Status(ctx)
		if err != nil {
			return err
		}
		if len(args) == 2 {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(reports); err != nil {
				return err
			}
		} else {
			printStatus(stdout, reports)
		}
		for _, r := range reports {
			if !r.Guarded {
				return errUnguarded
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

func printStatus(w io.Writer, reports []installer.ShimReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHIM\tHANDLER\tGUARDED\tKERNEL\tPROTECTED\tDELEGATE")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%v\t%s\n", r.Shim, r.Handler, r.Guarded, r.Verdict, r.Protected, r.Delegate)
	}
	tw.Flush()
	for _, r := range reports {
		if r.Reason != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Shim, r.Reason)
		}
	}
	if len(reports) == 0 {
		fmt.Fprintln(w, "no Kata runtime handler found in containerd's configuration")
	}
}
