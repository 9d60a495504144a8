package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is what the guest init does after mounting the share.
type Mode string

const (
	// ModeScenario plays the truth table's container (Scenario, Pressure)
	// and prints one Result line.
	ModeScenario Mode = "scenario"
	// ModeSmoke runs a few file operations on the share, one check line
	// each, then DoneLine.
	ModeSmoke Mode = "smoke"
	// ModeBench times the daemon benchmark's workloads (BenchPrefix lines),
	// prints SampleLine while the daemon still runs, IdleSampleLine after
	// BenchIdle without touching the share, then DoneLine.
	ModeBench Mode = "bench"
	// ModePOSIX runs the POSIX suite (test/posix, compiled to POSIXBinary)
	// against the share, one check at a time, one POSIXResult line each,
	// then DoneLine.
	ModePOSIX Mode = "posix"
)

// Keys of ModePOSIX.
const (
	// KeyPOSIXXattr=1: the daemon was given --xattr, so user xattrs must work.
	KeyPOSIXXattr = "ksg.posix_xattr"
	// KeyPOSIXEscapeMarker names a file beside the shared dir on the host
	// that no path from the guest may reach.
	KeyPOSIXEscapeMarker = "ksg.posix_escape_marker"
)

// BenchIdle is how long ModeBench leaves the share alone before
// IdleSampleLine: as long as the daemon-direct benchmark's -idle, so that a
// daemon that gives memory back once the guest is quiet is seen doing so.
const BenchIdle = 5 * time.Second

// POSIXBinary is where the initramfs holds `go test -c ./test/posix`.
const POSIXBinary = "/posix.test"

// Console lines of the smoke, bench and POSIX modes.
const (
	// CheckPrefix: "KSG-CHECK <name> ok" or "KSG-CHECK <name> FAIL <why>".
	CheckPrefix = "KSG-CHECK "
	// BenchPrefix: "KSG-BENCH <name> <nanoseconds> <unit count>".
	BenchPrefix = "KSG-BENCH "
	// SampleLine: the host should sample the daemon now.
	SampleLine = "KSG-SAMPLE"
	// IdleSampleLine: the host should sample the daemon again, after
	// BenchIdle in which the guest left the share alone.
	IdleSampleLine = "KSG-IDLE-SAMPLE"
	// DoneLine is the last line of a mode that ran to its end.
	DoneLine = "KSG-DONE"
	// POSIXPrefix starts a POSIXResult line.
	POSIXPrefix = "KSG-POSIX "
)

// CheckOK is the status of a passing smoke check.
const CheckOK = "ok"

// POSIXOutcome is how one POSIX check ended.
type POSIXOutcome string

const (
	POSIXPass POSIXOutcome = "pass"
	POSIXFail POSIXOutcome = "fail"
	POSIXSkip POSIXOutcome = "skip"
)

// POSIXResult is one check of the POSIX suite, run in its own process.
type POSIXResult struct {
	Check   string       `json:"check"`
	Outcome POSIXOutcome `json:"outcome"`
	MS      int          `json:"ms"`
	// Detail: the failure or skip message (the test's output, shortened).
	Detail string `json:"detail,omitempty"`
}

// Line renders r as its console line.
func (r POSIXResult) Line() string {
	b, _ := json.Marshal(r) // strings and ints only: cannot fail
	return POSIXPrefix + string(b)
}

// Bench is one KSG-BENCH line.
type Bench struct {
	NS    int64 // nanoseconds spent
	Units int64 // bytes or operations done in them
}

// Lines is what a smoke, bench or POSIX guest printed.
type Lines struct {
	Checks map[string]string // check name -> "ok" or "FAIL <why>"
	Bench  map[string]Bench
	POSIX  []POSIXResult
	Done   bool // DoneLine was printed
}

// ParseLines collects the machine-readable lines of a console. Kernel
// messages may share a line with the init's output, before its prefix.
func ParseLines(console []byte) (*Lines, error) {
	l := &Lines{Checks: map[string]string{}, Bench: map[string]Bench{}}
	for _, raw := range bytes.Split(console, []byte("\n")) {
		line := strings.TrimRight(string(raw), "\r")
		i := strings.Index(line, "KSG-")
		if i < 0 {
			continue
		}
		if err := l.add(line[i:]); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *Lines) add(line string) error {
	switch {
	case line == DoneLine:
		l.Done = true
	case strings.HasPrefix(line, CheckPrefix):
		name, status, ok := strings.Cut(strings.TrimPrefix(line, CheckPrefix), " ")
		if !ok || name == "" {
			return fmt.Errorf("check line %q: want %s<name> <status>", line, CheckPrefix)
		}
		l.Checks[name] = status
	case strings.HasPrefix(line, BenchPrefix):
		f := strings.Fields(strings.TrimPrefix(line, BenchPrefix))
		if len(f) != 3 {
			return fmt.Errorf("bench line %q: want %s<name> <ns> <units>", line, BenchPrefix)
		}
		ns, err1 := strconv.ParseInt(f[1], 10, 64)
		units, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || ns <= 0 {
			return fmt.Errorf("bench line %q: want positive integers", line)
		}
		l.Bench[f[0]] = Bench{NS: ns, Units: units}
	case strings.HasPrefix(line, POSIXPrefix):
		var r POSIXResult
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, POSIXPrefix)), &r); err != nil {
			return fmt.Errorf("POSIX line %q: %w", line, err)
		}
		l.POSIX = append(l.POSIX, r)
	}
	return nil
}
