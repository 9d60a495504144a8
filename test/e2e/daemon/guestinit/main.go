// Command guestinit is the init of the daemon tests' guest: it mounts the
// virtio-fs share at /mnt, runs the scenario named by ksg.mode= on the
// kernel command line, prints one line per result and powers off.
//
// Lines: "KSG-CHECK <name> ok" or "KSG-CHECK <name> FAIL <why>",
// "KSG-BENCH <name> <nanoseconds> <unit count>", and "KSG-DONE" last.
package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("KSG-CHECK init FAIL panic: %v\n", r)
		}
		fmt.Println("KSG-DONE")
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	for _, m := range []struct{ src, dst, fs string }{{"devtmpfs", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}} {
		_ = os.MkdirAll(m.dst, 0o755)
		_ = unix.Mount(m.src, m.dst, m.fs, 0, "")
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	mode, tag := "smoke", "ksg"
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "ksg.mode="); ok {
			mode = v
		}
		if v, ok := strings.CutPrefix(f, "ksg.tag="); ok {
			tag = v
		}
	}
	_ = os.MkdirAll("/mnt", 0o755)
	if err := unix.Mount(tag, "/mnt", "virtiofs", 0, ""); err != nil {
		fmt.Printf("KSG-CHECK mount FAIL %v\n", err)
		return
	}
	fmt.Println("KSG-CHECK mount ok")
	switch mode {
	case "smoke":
		smoke()
	case "bench":
		bench()
	default:
		fmt.Printf("KSG-CHECK mode FAIL unknown mode %q\n", mode)
	}
	_ = unix.Unmount("/mnt", 0)
}

func check(name string, err error) {
	if err != nil {
		fmt.Printf("KSG-CHECK %s FAIL %v\n", name, err)
		return
	}
	fmt.Printf("KSG-CHECK %s ok\n", name)
}

func smoke() {
	check("read_host_file", func() error {
		b, err := os.ReadFile("/mnt/hello")
		if err != nil {
			return err
		}
		if string(b) != "hello from the host\n" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}())
	check("write_file", os.WriteFile("/mnt/from-guest", []byte("written in the guest\n"), 0o644))
	check("big_file", func() error {
		data := make([]byte, 3<<20+12345)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := os.WriteFile("/mnt/big", data, 0o644); err != nil {
			return err
		}
		dropCaches()
		got, err := os.ReadFile("/mnt/big")
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("read back %d bytes differ", len(got))
		}
		return nil
	}())
	check("readdir_500", func() error {
		if err := os.Mkdir("/mnt/many", 0o755); err != nil {
			return err
		}
		for i := range 500 {
			if err := os.WriteFile(fmt.Sprintf("/mnt/many/f%04d", i), nil, 0o644); err != nil {
				return err
			}
		}
		dropCaches()
		ents, err := os.ReadDir("/mnt/many")
		if err != nil {
			return err
		}
		if len(ents) != 500 {
			return fmt.Errorf("%d entries", len(ents))
		}
		return nil
	}())
	check("rename_link_symlink_unlink", func() error {
		if err := os.WriteFile("/mnt/a", []byte("x"), 0o644); err != nil {
			return err
		}
		if err := os.Rename("/mnt/a", "/mnt/b"); err != nil {
			return err
		}
		if err := os.Link("/mnt/b", "/mnt/c"); err != nil {
			return err
		}
		if err := os.Symlink("b", "/mnt/d"); err != nil {
			return err
		}
		if t, err := os.Readlink("/mnt/d"); err != nil || t != "b" {
			return fmt.Errorf("readlink %q %v", t, err)
		}
		var st unix.Stat_t
		if err := unix.Stat("/mnt/c", &st); err != nil || st.Nlink != 2 {
			return fmt.Errorf("nlink %d %v", st.Nlink, err)
		}
		for _, n := range []string{"/mnt/b", "/mnt/c", "/mnt/d"} {
			if err := os.Remove(n); err != nil {
				return err
			}
		}
		return nil
	}())
	check("truncate_chmod_chown", func() error {
		if err := os.Truncate("/mnt/from-guest", 7); err != nil {
			return err
		}
		if err := os.Chmod("/mnt/from-guest", 0o600); err != nil {
			return err
		}
		if err := os.Chown("/mnt/from-guest", 1000, 1000); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat("/mnt/from-guest", &st); err != nil {
			return err
		}
		if st.Size != 7 || st.Mode&0o777 != 0o600 || st.Uid != 1000 || st.Gid != 1000 {
			return fmt.Errorf("size %d mode %o owner %d:%d", st.Size, st.Mode&0o777, st.Uid, st.Gid)
		}
		return nil
	}())
	check("mmap_shared_write", func() error {
		f, err := os.OpenFile("/mnt/mapped", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(8192); err != nil {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		copy(m[4096:], "mapped bytes")
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return err
		}
		_ = unix.Munmap(m)
		b := make([]byte, 12)
		if _, err := f.ReadAt(b, 4096); err != nil {
			return err
		}
		if string(b) != "mapped bytes" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}())
	check("submount_own_st_dev", func() error {
		var root, vol unix.Stat_t
		if err := unix.Stat("/mnt", &root); err != nil {
			return err
		}
		if err := unix.Stat("/mnt/vol", &vol); err != nil {
			return err
		}
		if root.Dev == vol.Dev {
			return fmt.Errorf("volume shares st_dev %d with the share", root.Dev)
		}
		b, err := os.ReadFile("/mnt/vol/in-volume")
		if err != nil || string(b) != "volume file\n" {
			return fmt.Errorf("read %q %v", b, err)
		}
		return nil
	}())
	check("dotdot_stays_in_guest", func() error {
		// ".." of the share's root is the guest's /, not the host's.
		if _, err := os.Stat("/mnt/../mnt/hello"); err != nil {
			return err
		}
		return nil
	}())
}

func dropCaches() {
	unix.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

func report(name string, d time.Duration, n int) {
	fmt.Printf("KSG-BENCH %s %d %d\n", name, d.Nanoseconds(), n)
}

func bench() {
	const size = 64 << 20
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	// 64 MiB sequential write, 1 MiB writes, fsync included.
	start := time.Now()
	f, err := os.Create("/mnt/seq")
	if err != nil {
		check("bench_create", err)
		return
	}
	for off := 0; off < size; off += len(buf) {
		if _, err := f.Write(buf); err != nil {
			check("bench_write", err)
			return
		}
	}
	check("bench_fsync", f.Sync())
	f.Close()
	report("seq_write_64MiB", time.Since(start), size)

	dropCaches()
	start = time.Now()
	f, _ = os.Open("/mnt/seq")
	n := 0
	for {
		k, err := f.Read(buf)
		n += k
		if err != nil {
			break
		}
	}
	f.Close()
	report("seq_read_64MiB", time.Since(start), n)
	if n != size {
		check("bench_read", fmt.Errorf("read %d bytes", n))
	}

	dropCaches()
	f, _ = os.Open("/mnt/seq")
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	r := rand.New(rand.NewPCG(1, 2))
	small := make([]byte, 4096)
	const reads = 2000
	start = time.Now()
	for range reads {
		off := int64(r.IntN(size/4096)) * 4096
		if _, err := f.ReadAt(small, off); err != nil {
			check("bench_randread", err)
			break
		}
	}
	report("rand_read_4KiB", time.Since(start), reads)
	f.Close()
	_ = os.Remove("/mnt/seq")

	const files = 10000
	_ = os.Mkdir("/mnt/meta", 0o755)
	start = time.Now()
	for i := range files {
		p := filepath.Join("/mnt/meta", fmt.Sprintf("f%05d", i))
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			check("bench_create_files", err)
			return
		}
		unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			check("bench_stat_files", err)
			return
		}
		if err := unix.Unlink(p); err != nil {
			check("bench_unlink_files", err)
			return
		}
	}
	report("create_stat_unlink_10k", time.Since(start), files)

	_ = os.Mkdir("/mnt/dir", 0o755)
	for i := range files {
		fd, err := unix.Open(filepath.Join("/mnt/dir", fmt.Sprintf("e%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			check("bench_mkfiles", err)
			return
		}
		unix.Close(fd)
	}
	dropCaches()
	start = time.Now()
	d, err := os.Open("/mnt/dir")
	if err != nil {
		check("bench_opendir", err)
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	report("readdir_10k", time.Since(start), len(names))
	if err != nil || len(names) != files {
		check("bench_readdir", fmt.Errorf("%d names, %v", len(names), err))
	}
	fmt.Println("KSG-CHECK bench ok")
}

var _ = syscall.Getpid
