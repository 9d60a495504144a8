package e2e

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	Name         string // without leading slash
	Mode         uint32 // type and permission bits, as in st_mode
	Data         []byte // regular files only
	Major, Minor uint32 // device nodes only
}

const (
	modeDir   = 0o040000
	modeReg   = 0o100000
	modeChr   = 0o020000
	newcMagic = "070701"
	trailer   = "TRAILER!!!"
)

// writeNewc writes entries as a "newc" cpio archive, the format the kernel
// unpacks into rootfs (Documentation/driver-api/early-userspace/buffer-format.rst).
func writeNewc(w io.Writer, entries []cpioEntry) error {
	cw := &countingWriter{w: w}
	for i, e := range append(entries, cpioEntry{Name: trailer}) {
		name := strings.TrimPrefix(e.Name, "/")
		if name == "" {
			return fmt.Errorf("cpio entry %d has an empty name", i)
		}
		nlink := uint32(1)
		if e.Mode&0o170000 == modeDir {
			nlink = 2
		}
		if e.Name == trailer {
			nlink = 0
		}
		hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			newcMagic, i+1, e.Mode, 0, 0, nlink, 0, len(e.Data),
			0, 0, e.Major, e.Minor, len(name)+1, 0)
		if _, err := io.WriteString(cw, hdr+name+"\x00"); err != nil {
			return err
		}
		if err := cw.pad4(); err != nil {
			return err
		}
		if _, err := cw.Write(e.Data); err != nil {
			return err
		}
		if err := cw.pad4(); err != nil {
			return err
		}
	}
	return nil
}

// writeInitramfs writes an initramfs whose /init is the binary at initPath.
func writeInitramfs(path, initPath string) error {
	init, err := os.ReadFile(initPath)
	if err != nil {
		return fmt.Errorf("read guest init: %w", err)
	}
	entries := []cpioEntry{
		{Name: "dev", Mode: modeDir | 0o755},
		{Name: "dev/console", Mode: modeChr | 0o600, Major: 5, Minor: 1},
		{Name: "proc", Mode: modeDir | 0o755},
		{Name: "sys", Mode: modeDir | 0o755},
		{Name: "share", Mode: modeDir | 0o755},
		{Name: "init", Mode: modeReg | 0o755, Data: init},
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeNewc(f, entries); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) pad4() error {
	if pad := (4 - c.n%4) % 4; pad > 0 {
		_, err := c.Write(make([]byte, pad))
		return err
	}
	return nil
}
