package harness

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// CPIOEntry is one file of an initramfs.
type CPIOEntry struct {
	Name         string // without leading slash
	Mode         uint32 // type and permission bits, as in st_mode
	Data         []byte // regular files only
	Major, Minor uint32 // device nodes only
}

const (
	ModeDir   = 0o040000
	ModeReg   = 0o100000
	ModeChr   = 0o020000
	newcMagic = "070701"
	trailer   = "TRAILER!!!"
)

// WriteNewc writes entries as a "newc" cpio archive, the format the kernel
// unpacks into rootfs.
func WriteNewc(w io.Writer, entries []CPIOEntry) error {
	cw := &countingWriter{w: w}
	for i, e := range append(entries, CPIOEntry{Name: trailer}) {
		name := strings.TrimPrefix(e.Name, "/")
		if name == "" {
			return fmt.Errorf("cpio entry %d has an empty name", i)
		}
		nlink := uint32(1)
		if e.Mode&0o170000 == ModeDir {
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

// GuestFile is a host file copied into the initramfs as an executable.
type GuestFile struct {
	Name string // path in the guest, without leading slash
	Path string // on the host
}

// WriteInitramfs writes an initramfs whose /init is the binary at initPath,
// plus extra executables (e.g. the POSIX suite's test binary).
func WriteInitramfs(path, initPath string, extra ...GuestFile) error {
	entries := []CPIOEntry{
		{Name: "dev", Mode: ModeDir | 0o755},
		{Name: "dev/console", Mode: ModeChr | 0o600, Major: 5, Minor: 1},
		{Name: "proc", Mode: ModeDir | 0o755},
		{Name: "sys", Mode: ModeDir | 0o755},
		{Name: "share", Mode: ModeDir | 0o755},
	}
	for _, f := range append([]GuestFile{{Name: "init", Path: initPath}}, extra...) {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			return fmt.Errorf("read guest file /%s: %w", f.Name, err)
		}
		entries = append(entries, CPIOEntry{Name: f.Name, Mode: ModeReg | 0o755, Data: data})
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteNewc(out, entries); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return out.Close()
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
