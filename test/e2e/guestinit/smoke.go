package main

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// smoke is guest.ModeSmoke: a few operations a container does on its
// rootfs and volumes, one check line each. The host then looks at what the
// guest wrote.
func smoke() {
	check("read_host_file", func() error {
		b, err := readFile(shareMount + "/hello")
		if err != nil {
			return err
		}
		if string(b) != "hello from the host\n" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}())
	check("write_file", writeFile(shareMount+"/from-guest", []byte("written in the guest\n")))
	check("big_file", func() error {
		data := make([]byte, 3<<20+12345)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := writeFile(shareMount+"/big", data); err != nil {
			return err
		}
		dropCaches()
		got, err := readFile(shareMount + "/big")
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("read back %d bytes differ", len(got))
		}
		return nil
	}())
	check("readdir_500", func() error {
		if err := os.Mkdir(shareMount+"/many", 0o755); err != nil {
			return err
		}
		for i := range 500 {
			if err := writeFile(fmt.Sprintf(shareMount+"/many/f%04d", i), nil); err != nil {
				return err
			}
		}
		dropCaches()
		n, err := countEntries(shareMount + "/many")
		if err != nil {
			return err
		}
		if n != 500 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	}())
	check("rename_link_symlink_unlink", func() error {
		if err := writeFile(shareMount+"/a", []byte("x")); err != nil {
			return err
		}
		if err := os.Rename(shareMount+"/a", shareMount+"/b"); err != nil {
			return err
		}
		if err := os.Link(shareMount+"/b", shareMount+"/c"); err != nil {
			return err
		}
		if err := os.Symlink("b", shareMount+"/d"); err != nil {
			return err
		}
		if t, err := os.Readlink(shareMount + "/d"); err != nil || t != "b" {
			return fmt.Errorf("readlink %q %v", t, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(shareMount+"/c", &st); err != nil || st.Nlink != 2 {
			return fmt.Errorf("nlink %d %v", st.Nlink, err)
		}
		for _, n := range []string{shareMount + "/b", shareMount + "/c", shareMount + "/d"} {
			if err := os.Remove(n); err != nil {
				return err
			}
		}
		return nil
	}())
	check("truncate_chmod_chown", func() error {
		if err := os.Truncate(shareMount+"/from-guest", 7); err != nil {
			return err
		}
		if err := os.Chmod(shareMount+"/from-guest", 0o600); err != nil {
			return err
		}
		if err := os.Chown(shareMount+"/from-guest", 1000, 1000); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(shareMount+"/from-guest", &st); err != nil {
			return err
		}
		if st.Size != 7 || st.Mode&0o777 != 0o600 || st.Uid != 1000 || st.Gid != 1000 {
			return fmt.Errorf("size %d mode %o owner %d:%d", st.Size, st.Mode&0o777, st.Uid, st.Gid)
		}
		return nil
	}())
	check("mmap_shared_write", func() error {
		fd, err := unix.Open(shareMount+"/mapped", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Ftruncate(fd, 8192); err != nil {
			return err
		}
		m, err := unix.Mmap(fd, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		copy(m[4096:], "mapped bytes")
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return err
		}
		_ = unix.Munmap(m)
		b := make([]byte, 12)
		if _, err := unix.Pread(fd, b, 4096); err != nil {
			return err
		}
		if string(b) != "mapped bytes" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}())
	check("submount_own_st_dev", func() error {
		// Walking into the volume triggers the automount; stat of the
		// mount point alone may not.
		b, err := readFile(shareMount + "/vol/in-volume")
		if err != nil || string(b) != "volume file\n" {
			return fmt.Errorf("read %q %v", b, err)
		}
		var root, vol unix.Stat_t
		if err := unix.Stat(shareMount, &root); err != nil {
			return err
		}
		if err := unix.Stat(shareMount+"/vol/.", &vol); err != nil {
			return err
		}
		if root.Dev == vol.Dev {
			return fmt.Errorf("volume shares st_dev %d with the share", root.Dev)
		}
		return nil
	}())
	check("dotdot_stays_in_guest", func() error {
		// ".." of the share's root is the guest's /, not the host's.
		if _, err := os.Stat(shareMount + "/.." + shareMount + "/hello"); err != nil {
			return err
		}
		return nil
	}())
}
