package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/guest"
)

func report(name string, d time.Duration, n int) {
	fmt.Printf("%s%s %d %d\n", guest.BenchPrefix, name, d.Nanoseconds(), n)
}

// benchReps repeats the short workloads; their times and units add up, so
// one scheduling hiccup of the TCG host weighs less.
const benchReps = 5

// bench is guest.ModeBench: the workloads of make bench-daemon, timed in
// the guest, one line each.
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
		fd, err := unix.Open(shareMount+"/seq", unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
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
		fd, _ = unix.Open(shareMount+"/seq", unix.O_RDONLY|unix.O_CLOEXEC, 0)
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
		fd, _ = unix.Open(shareMount+"/seq", unix.O_RDONLY|unix.O_CLOEXEC, 0)
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
	_ = unix.Unlink(shareMount + "/seq")

	const files = 10000
	_ = os.Mkdir(shareMount+"/meta", 0o755)
	start := time.Now()
	for i := range files {
		p := filepath.Join(shareMount+"/meta", fmt.Sprintf("f%05d", i))
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

	_ = os.Mkdir(shareMount+"/dir", 0o755)
	for i := range files {
		fd, err := unix.Open(filepath.Join(shareMount+"/dir", fmt.Sprintf("e%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
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
		count, err := countEntries(shareMount + "/dir")
		dT += time.Since(start)
		dN += count
		if err != nil || count != files {
			check("bench_readdir", fmt.Errorf("%d names, %v", count, err))
			return
		}
	}
	report("readdir_10k", dT, dN)
	check("bench", nil)
	// The host samples the daemon's memory on these lines: keep the VM (and
	// so the daemon) up a moment longer after each.
	fmt.Println(guest.SampleLine)
	time.Sleep(guest.BenchIdle)
	fmt.Println(guest.IdleSampleLine)
	time.Sleep(2 * time.Second)
}
