package main

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"
)

// Plain-syscall file helpers for the smoke and bench modes: one system call
// per step, no os.File or poller in the way of what is measured.

// dropCaches makes the next reads go to the daemon.
func dropCaches() {
	unix.Sync()
	_ = writeFile("/proc/sys/vm/drop_caches", []byte("3"))
}

func readFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

func writeFile(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if err := writeAll(fd, data); err != nil {
		unix.Close(fd)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return unix.Close(fd)
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// countEntries counts a directory's entries other than . and .. with
// getdents64.
func countEntries(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	count := 0
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return count, err
		}
		if n == 0 {
			return count, nil
		}
		b := buf[:n]
		for len(b) >= 19 {
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				count++
			}
			b = b[reclen:]
		}
	}
}
