package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// procTree is a daemon's processes: the one started and its descendants
// (QEMU's C virtiofsd serves from a forked sandbox child).
func procTree(pid int) []int {
	out := []int{pid}
	for _, c := range testutil.Children(pid) {
		out = append(out, procTree(c)...)
	}
	return out
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTick = 100

// cpuTime sums utime+stime of pids (all their threads, live and ended).
func cpuTime(pids []int) (time.Duration, error) {
	var ticks int64
	for _, p := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // a short-lived helper that ended
		}
		if err != nil {
			return 0, err
		}
		s := string(st)
		// Fields after the command name; utime and stime are fields 14
		// and 15 of stat(5), 12 and 13 here.
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %d fields", p, len(f))
		}
		for _, v := range f[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", p, err)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// memory is a daemon's memory in kB, summed over its processes.
type memory struct {
	rss     int // smaps_rollup Rss: resident, incl. the guest pages it touched
	private int // Private_Clean+Private_Dirty: pages no other process maps
	anon    int // Anonymous: heap, stacks, runtime
	peak    int // VmHWM: peak resident
	// startedPeak is the VmHWM of the process started (the one Kata
	// waits for): a sandboxing daemon's waiting parent.
	startedPeak int
}

func readMemory(pids []int) (memory, error) {
	var m memory
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			return m, err
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return m, err
		}
		for _, sc := range []*bufio.Scanner{bufio.NewScanner(bytes.NewReader(b)), bufio.NewScanner(bytes.NewReader(st))} {
			for sc.Scan() {
				k, v, ok := strings.Cut(sc.Text(), ":")
				if !ok {
					continue
				}
				kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				if err != nil {
					continue
				}
				switch k {
				case "Rss":
					m.rss += kb
				case "Private_Clean", "Private_Dirty":
					m.private += kb
				case "Anonymous":
					m.anon += kb
				case "VmHWM":
					m.peak += kb
					if p == pids[0] {
						m.startedPeak = kb
					}
				}
			}
		}
	}
	return m, nil
}
