// Command guestinit is the init of the daemon tests' guest: it mounts the
// virtio-fs share at /mnt, runs the scenario named by ksg.mode= on the
// kernel command line, prints one line per result and powers off.
//
// Lines: "KSG-CHECK <name> ok" or "KSG-CHECK <name> FAIL <why>",
// "KSG-BENCH <name> <nanoseconds> <unit count>", "KSG-SAMPLE" when the host
// should sample the daemon, and "KSG-DONE" last.
//
// It never opens an os.File nor sleeps on a Go timer: Go's poller needs
// eventfd, which the tiny guest kernel lacks; it uses plain syscalls.
package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
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
	cmdline, _ := readFile("/proc/cmdline")
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
		b, err := readFile("/mnt/hello")
		if err != nil {
			return err
		}
		if string(b) != "hello from the host\n" {
			return fmt.Errorf("read %q", b)
		}
		return nil
	}())
	check("write_file", writeFile("/mnt/from-guest", []byte("written in the guest\n")))
	check("big_file", func() error {
		data := make([]byte, 3<<20+12345)
		for i := range data {
			data[i] = byte(i * 7)
		}
		if err := writeFile("/mnt/big", data); err != nil {
			return err
		}
		dropCaches()
		got, err := readFile("/mnt/big")
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
			if err := writeFile(fmt.Sprintf("/mnt/many/f%04d", i), nil); err != nil {
				return err
			}
		}
		dropCaches()
		n, err := countEntries("/mnt/many")
		if err != nil {
			return err
		}
		if n != 500 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	}())
	check("rename_link_symlink_unlink", func() error {
		if err := writeFile("/mnt/a", []byte("x")); err != nil {
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
		fd, err := unix.Open("/mnt/mapped", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
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
		b, err := readFile("/mnt/vol/in-volume")
		if err != nil || string(b) != "volume file\n" {
			return fmt.Errorf("read %q %v", b, err)
		}
		var root, vol unix.Stat_t
		if err := unix.Stat("/mnt", &root); err != nil {
			return err
		}
		if err := unix.Stat("/mnt/vol/.", &vol); err != nil {
			return err
		}
		if root.Dev == vol.Dev {
			return fmt.Errorf("volume shares st_dev %d with the share", root.Dev)
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
	_ = writeFile("/proc/sys/vm/drop_caches", []byte("3"))
}

func report(name string, d time.Duration, n int) {
	fmt.Printf("KSG-BENCH %s %d %d\n", name, d.Nanoseconds(), n)
}

// benchReps repeats the short workloads; their times and units add up, so
// one scheduling hiccup of the TCG host weighs less.
const benchReps = 5

func bench() {
	const size = 64 << 20
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	var wT, rT, rrT time.Duration
	var wN, rN, rrN int
	r := rand.New(rand.NewPCG(1, 2))
	small := make([]byte, 4096)
	const reads = 2000
	for range benchReps {
		// 64 MiB sequential write, 1 MiB writes, fsync included.
		start := time.Now()
		fd, err := unix.Open("/mnt/seq", unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			check("bench_create", err)
			return
		}
		for off := 0; off < size; off += len(buf) {
			if err := writeAll(fd, buf); err != nil {
				check("bench_write", err)
				return
			}
		}
		if err := unix.Fsync(fd); err != nil {
			check("bench_fsync", err)
			return
		}
		unix.Close(fd)
		wT += time.Since(start)
		wN += size

		dropCaches()
		start = time.Now()
		fd, _ = unix.Open("/mnt/seq", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		n := 0
		for {
			k, err := unix.Read(fd, buf)
			if k <= 0 || err != nil {
				break
			}
			n += k
		}
		unix.Close(fd)
		rT += time.Since(start)
		rN += n
		if n != size {
			check("bench_read", fmt.Errorf("read %d bytes", n))
			return
		}

		dropCaches()
		fd, _ = unix.Open("/mnt/seq", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		_ = unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM)
		start = time.Now()
		for range reads {
			off := int64(r.IntN(size/4096)) * 4096
			if _, err := unix.Pread(fd, small, off); err != nil {
				check("bench_randread", err)
				return
			}
		}
		rrT += time.Since(start)
		rrN += reads
		unix.Close(fd)
	}
	report("seq_write_64MiB", wT, wN)
	report("seq_read_64MiB", rT, rN)
	report("rand_read_4KiB", rrT, rrN)
	_ = unix.Unlink("/mnt/seq")

	const files = 10000
	_ = os.Mkdir("/mnt/meta", 0o755)
	start := time.Now()
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
	var dT time.Duration
	dN := 0
	for range benchReps {
		dropCaches()
		start = time.Now()
		count, err := countEntries("/mnt/dir")
		dT += time.Since(start)
		dN += count
		if err != nil || count != files {
			check("bench_readdir", fmt.Errorf("%d names, %v", count, err))
			return
		}
	}
	report("readdir_10k", dT, dN)
	fmt.Println("KSG-CHECK bench ok")
	// The host samples the daemon's memory on this line: keep the VM (and
	// so the daemon) up a moment longer.
	fmt.Println("KSG-SAMPLE")
	// Not time.Sleep: Go timers need the poller (eventfd).
	_ = unix.Nanosleep(&unix.Timespec{Sec: 2}, nil)
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
