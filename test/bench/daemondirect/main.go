// Command daemondirect drives virtio-fs daemons from the host, with no guest:
// a vhost-user front-end (vhostusertest, guest memory in a memfd) sends FUSE
// requests on one request queue to each daemon in turn, every daemon
// started through bin/kata-virtiofsd with Kata's argv, and prints markdown
// tables of throughput, the daemon's CPU time per operation and its memory.
// `make bench-daemon-direct` runs it (root: the daemons sandbox themselves).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/test/e2e/harness"
	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
	vut "github.com/kata-submount-guard/kata-submount-guard/virtcontainers/vhostuser/vhostusertest"
)

const rootID = 1

// daemon is one column: how kata-virtiofsd is told to serve.
type daemon struct {
	key, label string
	spec       func(upstream map[harness.Daemon]string) harness.DaemonSpec
	bin        string // "": -kata-virtiofsd
}

var allDaemons = []daemon{
	{"ours", "ours (recover off)", func(map[harness.Daemon]string) harness.DaemonSpec {
		return harness.DaemonSpec{Protection: protection.None}
	}, ""},
	{"ours-recover", "ours (recover on)", func(map[harness.Daemon]string) harness.DaemonSpec {
		return harness.DaemonSpec{Protection: protection.Recover}
	}, ""},
	{"rust", "Rust virtiofsd 1.13.2", func(u map[harness.Daemon]string) harness.DaemonSpec {
		return harness.DaemonSpec{Protection: protection.None, Upstream: u[harness.DaemonRust]}
	}, ""},
	{"c", "C virtiofsd (QEMU 7.2)", func(u map[harness.Daemon]string) harness.DaemonSpec {
		return harness.DaemonSpec{Protection: protection.None, Upstream: u[harness.DaemonC]}
	}, ""},
	// File handles instead of an O_PATH descriptor per inode: the only
	// daemon here that can hold more inodes than the descriptor limit
	// (it needs CAP_DAC_READ_SEARCH). Not in the default set.
	{"rust-handles", "Rust virtiofsd 1.13.2 --inode-file-handles=mandatory", func(u map[harness.Daemon]string) harness.DaemonSpec {
		return harness.DaemonSpec{Protection: protection.None, Upstream: u[harness.DaemonRust], Extra: []string{"--inode-file-handles=mandatory"}}
	}, ""},
}

type config struct {
	bin      string
	upstream map[harness.Daemon]string
	share    string
	work     string
	daemons  []daemon
	pools    []int
	streams  int
	rounds   int
	dur      time.Duration
	scale    []int
	workload string
	idle     time.Duration
	pin      *pinning // nil: not pinned
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "daemondirect:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	var (
		cfg     config
		daemons = flag.String("daemons", "ours,ours-recover,rust,c", "daemons to compare, in this order")
		pools   = flag.String("pools", "1,4", "--thread-pool-size values")
		scale   = flag.String("scale", "5000,10000,18000", "inodes looked up and kept for the memory table (the fd limit bounds it: each daemon keeps one O_PATH descriptor per inode); empty: no memory table")
		only    = flag.Bool("memory-only", false, "only the memory table")
		pinned  = flag.Bool("pin", false, "the front-end on one CPU, each daemon on the others (default: all share every CPU)")
	)
	flag.StringVar(&cfg.bin, "kata-virtiofsd", filepath.Join(root, "bin/kata-virtiofsd"), "kata-virtiofsd to start every daemon with")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds; daemons alternate within each")
	flag.IntVar(&cfg.streams, "streams", 4, "requests the front-end keeps in flight (one guest task each)")
	flag.DurationVar(&cfg.dur, "duration", 600*time.Millisecond, "measured time per workload, daemon and round")
	flag.StringVar(&cfg.workload, "workloads", "", "comma-separated workload keys (default: all)")
	flag.DurationVar(&cfg.idle, "idle", 5*time.Second, "how long each daemon idles after its last workload before its memory is read")
	out := flag.String("out", "", "also write the tables to this file")
	before := flag.String("before", "", "another kata-virtiofsd (an older build) served as daemon ours-before, recover off")
	daemonEnv := flag.String("daemon-env", "", "comma-separated K=V set in the daemons' environment only (e.g. GOGC=100), not this program's")
	flag.Parse()
	if *daemonEnv != "" {
		// The runtime read GOGC, GOMAXPROCS and the like at start: set now,
		// they reach only the processes started from here on.
		for _, kv := range strings.Split(*daemonEnv, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("-daemon-env: %q is not K=V", kv)
			}
			os.Setenv(k, v)
		}
	}
	if *before != "" {
		allDaemons = append(allDaemons, daemon{"ours-before", "ours before (recover off)", func(map[harness.Daemon]string) harness.DaemonSpec {
			return harness.DaemonSpec{Protection: protection.None}
		}, *before})
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: the daemons sandbox themselves in namespaces")
	}
	cfg.upstream = map[harness.Daemon]string{
		harness.DaemonC:    harness.CDaemonPath,
		harness.DaemonRust: filepath.Join(testutil.CacheDir(), "bin/virtiofsd-rust"),
	}
	for _, p := range append([]string{cfg.bin}, cfg.upstream[harness.DaemonC], cfg.upstream[harness.DaemonRust]) {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing (make build; test/setup installs the virtiofsds): %w", p, err)
		}
	}
	for _, k := range strings.Split(*daemons, ",") {
		found := false
		for _, d := range allDaemons {
			if d.key == k {
				cfg.daemons, found = append(cfg.daemons, d), true
			}
		}
		if !found {
			return fmt.Errorf("-daemons: unknown daemon %q", k)
		}
	}
	for _, p := range strings.Split(*pools, ",") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return fmt.Errorf("-pools: %q is not a pool size", p)
		}
		cfg.pools = append(cfg.pools, n)
	}
	if *scale != "" {
		for _, p := range strings.Split(*scale, ",") {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 {
				return fmt.Errorf("-scale: %q is not a count", p)
			}
			cfg.scale = append(cfg.scale, n)
		}
	}

	if *pinned {
		if cfg.pin, err = pin(); err != nil {
			return err
		}
	}

	// A short directory: a unix socket path must fit in 108 bytes.
	cfg.work, err = os.MkdirTemp("", "ksg-direct-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cfg.work)
	share, err := harness.NewShare(cfg.work, "bench", "2g")
	if err != nil {
		return err
	}
	defer share.Close()
	cfg.share = share.Dir
	maxScale := 0
	for _, n := range cfg.scale {
		maxScale = max(maxScale, n)
	}
	if err := makeTree(cfg.share, cfg.streams, maxScale); err != nil {
		return fmt.Errorf("making the tree: %w", err)
	}

	var b strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "Load average at the start: %s. CPUs: %s.\n\n", strings.Join(strings.Fields(string(load))[:3], " "), cfg.pin)
	if !*only {
		if err := throughput(ctx, &cfg, &b); err != nil {
			return err
		}
	}
	if len(cfg.scale) > 0 {
		if err := memoryAtScale(ctx, &cfg, &b); err != nil {
			return err
		}
	}
	fmt.Print(b.String())
	if *out != "" {
		return os.WriteFile(*out, []byte(b.String()), 0o644)
	}
	return nil
}

// started is a daemon serving the share to our front-end.
type started struct {
	proc *harness.DaemonProc
	dev  *vut.FSDevice
	// req and hiprio are the two queues; c holds one client per stream.
	req, hiprio *ring
	c           []*client
	pids        []int
	log         string // the daemon's output and syslog lines
}

// logTail is the end of the daemon's log, for errors.
func (s *started) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (s *started) stop() error {
	s.req.close()
	s.hiprio.close()
	s.dev.Close()
	if ok, err := s.proc.Wait(5 * time.Second); ok && err != nil {
		// Every daemon ends by itself when its front-end hangs up.
		return fmt.Errorf("daemon exited: %w", err)
	}
	return s.proc.Stop()
}

// start runs d through kata-virtiofsd with Kata's argv and pool threads,
// connects and sends INIT; it tries three times, as a daemon's start on a
// loaded host may time out.
func start(cfg *config, d daemon, pool int, tag string) (*started, error) {
	var err error
	for attempt := range 3 {
		var s *started
		if s, err = startOnce(cfg, d, pool, fmt.Sprintf("%s-%d", tag, attempt)); err == nil {
			return s, nil
		}
		fmt.Fprintf(os.Stderr, "starting %s (attempt %d): %v\n", d.key, attempt+1, err)
	}
	return nil, err
}

func startOnce(cfg *config, d daemon, pool int, tag string) (*started, error) {
	// What a daemon that died in CREATE+UNLINK left behind.
	if err := emptyDir(filepath.Join(cfg.share, "create")); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.work, tag+"-")
	if err != nil {
		return nil, err
	}
	spec := d.spec(cfg.upstream)
	spec.StateDir = filepath.Join(dir, "state")
	args := spec.Args(cfg.share)
	for i, a := range args {
		if a == "--thread-pool-size=1" {
			args[i] = "--thread-pool-size=" + strconv.Itoa(pool)
		}
	}
	sock := filepath.Join(dir, "s")
	bin := cfg.bin
	if d.bin != "" {
		bin = d.bin
	}
	bin, args = cfg.pin.command(bin, args)
	proc, err := harness.StartDaemon(bin, args, dir, sock, filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	dev, err := vut.DialFS(sock, 10*time.Second)
	if err != nil {
		proc.Stop()
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return nil, fmt.Errorf("%s: %w; its log: %s", d.key, err, log)
	}
	s := &started{proc: proc, dev: dev, req: newRing(dev, dev.Requests), hiprio: newRing(dev, dev.Hiprio), log: filepath.Join(dir, "log")}
	// Where vhostusertest.DialFS put the queues.
	reqs, err := s.req.streams(cfg.streams, 8*mib, 16*mib, dataSide)
	var his []*stream
	if err == nil {
		his, err = s.hiprio.streams(cfg.streams, 0, 4*mib, 4096)
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	ses := &session{}
	for w := range cfg.streams {
		s.c = append(s.c, &client{req: reqs[w], hiprio: his[w], session: ses})
	}
	if err := s.c[0].init(); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w", d.key, err)
	}
	s.pids = procTree(proc.Pid())
	return s, nil
}

// sample is one workload on one daemon in one round.
type sample struct {
	round int           // which round (from 0), to pair it with the other daemons'
	rate  float64       // units per second
	cpu   time.Duration // daemon CPU time per operation (per unit, or per 1 MiB request)
}

// measure runs r's operations from streams goroutines for dur.
func measure(s *started, r *prepared, data bool, streams int, dur time.Duration) (sample, error) {
	cpu0, err := cpuTime(s.pids)
	if err != nil {
		return sample{}, err
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	var units, ops atomic.Int64
	t0 := time.Now()
	for w := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				n, err := r.op(w, i)
				if err != nil {
					errs <- err
					return
				}
				units.Add(int64(n))
				ops.Add(1)
			}
		}()
	}
	time.Sleep(dur)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	cpu1, err := cpuTime(s.pids)
	if err != nil {
		return sample{}, err
	}
	select {
	case err := <-errs:
		return sample{}, err
	default:
	}
	per := units.Load()
	if data {
		per = ops.Load()
	}
	if per == 0 {
		return sample{}, fmt.Errorf("no operation completed in %v", elapsed)
	}
	return sample{rate: float64(units.Load()) / elapsed.Seconds(), cpu: (cpu1 - cpu0) / time.Duration(per)}, nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
