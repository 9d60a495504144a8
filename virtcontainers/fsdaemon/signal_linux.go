package fsdaemon

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func notify(c chan os.Signal)     { signal.Notify(c, unix.SIGTERM, unix.SIGINT, unix.SIGHUP) }
func stopNotify(c chan os.Signal) { signal.Stop(c) }
