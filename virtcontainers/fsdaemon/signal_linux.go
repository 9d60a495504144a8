package fsdaemon

import (
	"os"

	"golang.org/x/sys/unix"
)

// stopSignals end the daemon cleanly.
var stopSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP}
