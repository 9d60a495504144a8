// Command with-syslog runs a command with a syslog daemon of its own at
// /dev/log, in a private mount namespace (testutil.Syslog), so that test
// suites can be run as on a host with a system syslog without touching the
// host's /dev/log:
//
//	go run ./test/testutil/with-syslog [-log FILE] -- go test ./cmd/kata-virtiofsd/...
//
// It exits with the command's status. The messages received go to FILE
// (default: none kept), and their count to stderr. With -none the private
// /dev has no /dev/log at all, as on a host without a syslog daemon
// (testutil.WrapNoSyslog). Needs root.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "with-syslog: %v\n", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run() (int, error) {
	logPath := flag.String("log", "", "append the syslog messages received to this file")
	none := flag.Bool("none", false, "no /dev/log at all, as on a host without a syslog daemon")
	flag.Parse()
	if flag.NArg() == 0 {
		return 0, errors.New("usage: with-syslog [-log FILE | -none] -- COMMAND [ARG...]")
	}
	if os.Geteuid() != 0 {
		return 0, errors.New("needs root: it mounts a private /dev")
	}
	var (
		mu    sync.Mutex
		count int
		logf  *os.File
	)
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		logf = f
	}
	dir, err := os.MkdirTemp("", "ksg-with-syslog-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if *none {
		if err := testutil.WrapNoSyslog(cmd, dir); err != nil {
			return 0, err
		}
		return exitCode(cmd.Run())
	}
	sl, err := testutil.ListenSyslog(filepath.Join(dir, "log"), func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		count++
		if logf != nil {
			fmt.Fprintln(logf, msg)
		}
	})
	if err != nil {
		return 0, err
	}
	if err := sl.Wrap(cmd); err != nil {
		sl.Close()
		return 0, err
	}
	err = cmd.Run()
	sl.Close()
	mu.Lock()
	fmt.Fprintf(os.Stderr, "with-syslog: %d messages reached the private /dev/log\n", count)
	mu.Unlock()
	return exitCode(err)
}

// exitCode is the command's exit status, or an error if it did not run.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}
