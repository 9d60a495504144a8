// Package guest is the contract between the VM tests on the host and the one
// init they boot in each guest (test/e2e/guestinit): the kernel command line
// keys the host sets, the modes the init runs, and the machine-readable lines
// it prints on its serial console (a Result for the truth table's scenario;
// check, benchmark and POSIX lines for the daemon tests).
package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Kernel command line keys, each `key=value`.
const (
	KeyMode     = "ksg.mode"     // a Mode; default ModeScenario
	KeyScenario = "ksg.scenario" // a Scenario
	KeyPressure = "ksg.pressure" // a Pressure
	KeyTag      = "ksg.tag"      // virtio-fs tag of the share
	KeyVolume   = "ksg.volume"   // directory in the share that is a host mount
	KeyMarker   = "ksg.marker"   // content of <volume>/marker, proves the right directory is read
	KeyTree     = "ksg.tree"     // directory in the share walked to fill the dentry cache
	// KeySettleMS is how long (ms) the container keeps re-reading the volume
	// after pressure before calling it intact. The guest sends FORGETs on
	// virtio-fs's high-priority queue, which the daemon serves apart from
	// requests: thousands of them from a dentry-cache shrink can reach the
	// daemon well after the container's next read.
	KeySettleMS = "ksg.settle_ms"
	// KeyHang=1 makes the guest print HangLine and hang: the suite's test
	// that a hung guest is killed and reported.
	KeyHang = "ksg.hang"
)

// HangLine is what a guest told to hang prints first.
const HangLine = "KSG-LOG hanging on purpose"

// Scenario is how the container comes to hold the volume without any mount
// left on the shared mount's dentry for it.
type Scenario string

const (
	// BindDetach: the container bind-mounts the submount and lazily unmounts
	// its copy of the share; the agent lazily unmounts the original automount.
	BindDetach Scenario = "bind-detach"
	// SlaveUmount: / is rshared, the container's mounts are slaves, it
	// bind-mounts the submount; the agent's `umount -l` of the automount
	// propagates into the container.
	SlaveUmount Scenario = "slave-umount"
)

// Pressure is what makes the guest reclaim the volume's parent dentry.
type Pressure string

const (
	// DropCaches writes 2 to /proc/sys/vm/drop_caches.
	DropCaches Pressure = "drop-caches"
	// Memory allocates anonymous memory in a child until the OOM killer
	// ends it: reclaim shrinks the dentry cache on its way there.
	Memory Pressure = "memory"
)

// Outcome is what reading the volume from the container after pressure gave.
type Outcome string

const (
	OK        Outcome = "ok"         // every read worked and found the marker
	EBADF     Outcome = "ebadf"      // the bug: the daemon forgot the submount root
	WrongFile Outcome = "wrong-file" // reads worked but found another directory
	Error     Outcome = "error"      // anything else (setup failure, other errno)
)

// ResultPrefix starts the result line on the console.
const ResultPrefix = "KSG-RESULT "

// Op is one operation the container ran on the volume after pressure.
type Op struct {
	Name  string `json:"name"`
	Errno string `json:"errno,omitempty"` // e.g. "EBADF"; empty when it worked
	Error string `json:"error,omitempty"`
}

// Result is the guest's one machine-readable line.
type Result struct {
	Scenario Scenario `json:"scenario"`
	Pressure Pressure `json:"pressure"`
	Kernel   string   `json:"kernel"` // uname -r in the guest

	ShareDev  uint64 `json:"share_dev"`  // st_dev of the share's root
	VolumeDev uint64 `json:"volume_dev"` // st_dev of <share>/<volume> before the container
	// ContainerDev is st_dev of the volume as the container sees it after
	// pressure (0 if stat failed).
	ContainerDev uint64 `json:"container_dev"`
	// OriginalMounts counts mounts left at <share>/<volume> in the agent's and
	// the container's namespace after setup. 0 means nothing pins the dentry:
	// the dangerous state the bug needs (or no submount at all).
	OriginalMounts int `json:"original_mounts"`

	TreeEntries    int `json:"tree_entries"` // entries stat'ed to fill the dentry cache
	DentriesBefore int `json:"dentries_before"`
	DentriesAfter  int `json:"dentries_after"`
	// OOMKilled: the memory hog ended by SIGKILL (the OOM killer).
	OOMKilled bool `json:"oom_killed,omitempty"`

	// Attempts counts the container's reads of the volume after pressure,
	// over ReadForMS milliseconds; FailedAfterMS is when (ms after pressure)
	// the first one failed.
	Attempts      int `json:"attempts"`
	ReadForMS     int `json:"read_for_ms"`
	FailedAfterMS int `json:"failed_after_ms,omitempty"`

	Ops     []Op    `json:"ops"` // the last attempt's operations
	Outcome Outcome `json:"outcome"`
	Error   string  `json:"error,omitempty"`
}

// Submount reports whether the guest saw the volume as its own superblock.
func (r *Result) Submount() bool { return r.VolumeDev != 0 && r.VolumeDev != r.ShareDev }

// Line renders r as the console line.
func (r *Result) Line() string {
	b, err := json.Marshal(r)
	if err != nil { // cannot happen for this type; keep the line parseable
		return ResultPrefix + fmt.Sprintf(`{"outcome":"error","error":%q}`, err.Error())
	}
	return ResultPrefix + string(b)
}

// ParseConsole finds the last result line in a console log. Serial output
// may carry \r and kernel messages interleaved before the prefix.
func ParseConsole(console []byte) (*Result, error) {
	var last []byte
	for _, line := range bytes.Split(console, []byte("\n")) {
		if i := bytes.Index(line, []byte(ResultPrefix)); i >= 0 {
			last = bytes.TrimRight(line[i+len(ResultPrefix):], "\r")
		}
	}
	if last == nil {
		return nil, fmt.Errorf("no %q line on the console", strings.TrimSpace(ResultPrefix))
	}
	var r Result
	if err := json.Unmarshal(last, &r); err != nil {
		return nil, fmt.Errorf("parse result line %q: %w", last, err)
	}
	return &r, nil
}
