package shim

import (
	"flag"
	"io"
)

// invocation is one run of the binary, parsed with the flags containerd's
// shim library defines (runtime/v2/shim/shim.go, v1.7), plus -info, which
// newer containerd asks for. The parse only chooses what we do; the delegate
// always receives the original argv.
type invocation struct {
	action        string // flag.Arg(0): "start", "delete" or anything else
	id            string
	namespace     string
	address       string
	publishBinary string
	bundle        string
	socket        string
	debug         bool
	version       bool
	info          bool
	// parseErr is set when argv is not what we know; such an invocation is
	// handed off untouched and the delegate judges it.
	parseErr error
}

func parseArgs(args []string) invocation {
	var inv invocation
	fs := flag.NewFlagSet("containerd-shim-kata-v2", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&inv.debug, "debug", false, "")
	fs.BoolVar(&inv.version, "v", false, "")
	fs.BoolVar(&inv.info, "info", false, "")
	fs.StringVar(&inv.namespace, "namespace", "", "")
	fs.StringVar(&inv.id, "id", "", "")
	fs.StringVar(&inv.socket, "socket", "", "")
	fs.StringVar(&inv.bundle, "bundle", "", "")
	fs.StringVar(&inv.address, "address", "", "")
	fs.StringVar(&inv.publishBinary, "publish-binary", "", "")
	if len(args) > 1 {
		inv.parseErr = fs.Parse(args[1:])
	}
	if inv.parseErr == nil {
		inv.action = fs.Arg(0)
	}
	return inv
}

// uncheckableStart reports a start whose arguments we cannot parse: handing
// it off would create a sandbox without the check, so it fails instead.
func (inv invocation) uncheckableStart(args []string) bool {
	if inv.parseErr == nil {
		return false
	}
	for _, a := range args[1:] {
		if a == "start" {
			return true
		}
	}
	return false
}

// checks reports whether this invocation is one we check before handing off:
// `start`. Everything else goes to the delegate at once.
func (inv invocation) checks() bool {
	return inv.parseErr == nil && !inv.version && !inv.info && inv.action == "start"
}
