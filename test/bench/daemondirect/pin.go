package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// On a machine of few cores (two here) the front-end, standing in for the
// guest, and the daemon share them by default, and where the scheduler puts
// their threads moves a daemon's throughput a lot between rounds. Pinned
// (-pin), the front-end keeps the first CPU this program may use and every
// daemon runs on the others. That is a view of its own, not a cleaner one:
// on one core a daemon that serves from one thread (ours with a pool of 1,
// which runs with GOMAXPROCS 1) is favoured over one that hands each
// request from its queue thread to a pool thread (Rust virtiofsd), which
// unpinned can use the second core.

// pinning is where the front-end and the daemons run.
type pinning struct {
	frontEnd int    // the CPU this program runs on
	daemons  string // taskset's list of the daemons' CPUs
}

// pin confines this program to its first allowed CPU (GOMAXPROCS 1) and
// returns where the daemons go: the rest of the allowed CPUs.
func pin() (*pinning, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return nil, fmt.Errorf("-pin: %w", err)
	}
	var cpus []int
	for c := 0; len(cpus) < allowed.Count(); c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return nil, fmt.Errorf("-pin: this program may use %d CPU, it needs two (one for itself, one for the daemon); run with -pin=false", len(cpus))
	}
	runtime.GOMAXPROCS(1)
	var front unix.CPUSet
	front.Set(cpus[0])
	// Affinity is per thread, and a new thread inherits its creator's:
	// every thread now, and so every later one.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("-pin: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &front); err != nil && !errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("-pin: thread %d: %w", tid, err)
		}
	}
	rest := make([]string, 0, len(cpus)-1)
	for _, c := range cpus[1:] {
		rest = append(rest, strconv.Itoa(c))
	}
	return &pinning{frontEnd: cpus[0], daemons: strings.Join(rest, ",")}, nil
}

// command is how to start bin with args: through taskset onto the daemons'
// CPUs, which execs bin in the same process (the PID the measurements
// follow) before it starts any thread or child.
func (p *pinning) command(bin string, args []string) (string, []string) {
	if p == nil {
		return bin, args
	}
	return "taskset", append([]string{"--cpu-list", p.daemons, bin}, args...)
}

// String describes the pinning for the tables.
func (p *pinning) String() string {
	if p == nil {
		return "not pinned: the front-end and the daemon share every CPU"
	}
	where := "CPU " + p.daemons
	if strings.Contains(p.daemons, ",") {
		where = "CPUs " + p.daemons
	}
	return fmt.Sprintf("pinned: the front-end on CPU %d (GOMAXPROCS 1), the daemon on %s", p.frontEnd, where)
}
