package vhostuser

import "golang.org/x/sys/unix"

func unixEventfd() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK) }
