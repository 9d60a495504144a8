package hooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
)

// validIDPattern is Kata's rule for container and sandbox ids; it also keeps
// an id from naming a path outside the state directory. validID implements
// it by hand: compiling the shim's six regular expressions at every start
// cost it 0.1 ms (BENCHMARKS.md); FuzzValidID compares the two.
const validIDPattern = `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`

func validID(id string) bool {
	if len(id) < 2 || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// maxPlanSize caps what ReadPlan reads; a plan is a few KiB.
const maxPlanSize = 1 << 20

// PlanPath is where the plan of sandboxID lives.
func PlanPath(stateDir, sandboxID string) string {
	return filepath.Join(stateDir, sandboxID+".json")
}

func checkID(sandboxID string) error {
	if !validID(sandboxID) {
		return fmt.Errorf("sandbox id %q is not valid (want %s): %w", sandboxID, validIDPattern, errdefs.ErrInvalidArgument)
	}
	return nil
}

// WritePlan stores p as <stateDir>/<p.SandboxID>.json: written to a temporary
// file in the same directory, then renamed over the old one, so a reader sees
// the old plan or the new one, never a part. The file is 0600 and stateDir is
// created 0700. It is not fsynced: a plan only matters while its sandbox
// runs, and no sandbox survives the host going down; on a disk-backed
// state_dir the flush cost every sandbox start 0.3 ms (ext4, BENCHMARKS.md).
func WritePlan(stateDir string, p *Plan) (err error) {
	if p == nil {
		return fmt.Errorf("write plan: nil plan: %w", errdefs.ErrInvalidArgument)
	}
	if err := checkID(p.SandboxID); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	// MkdirAll leaves an existing directory as it is; plans are ours only.
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	final := PlanPath(stateDir, p.SandboxID)
	if err := atomicfile.Write(final, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write plan %s: %w", final, err)
	}
	return nil
}

// ReadPlan reads the plan of sandboxID. A missing plan is an error wrapping
// errdefs.ErrNotFound.
func ReadPlan(stateDir, sandboxID string) (*Plan, error) {
	if err := checkID(sandboxID); err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	path := PlanPath(stateDir, sandboxID)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no plan for sandbox %s at %s: %w", sandboxID, path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read plan: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPlanSize+1))
	if err != nil {
		return nil, fmt.Errorf("read plan %s: %w", path, err)
	}
	p, err := DecodePlan(data)
	if err != nil {
		return nil, fmt.Errorf("read plan %s: %w", path, err)
	}
	if p.SandboxID != sandboxID {
		return nil, fmt.Errorf("read plan %s: it is the plan of sandbox %q: %w", path, p.SandboxID, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// DecodePlan parses a plan's JSON form strictly: unknown fields, trailing
// data, and unknown action or protection words are errors.
func DecodePlan(data []byte) (*Plan, error) {
	if len(data) > maxPlanSize {
		return nil, fmt.Errorf("plan larger than %d bytes: %w", maxPlanSize, errdefs.ErrInvalidArgument)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("decode plan: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode plan: trailing data: %w", errdefs.ErrInvalidArgument)
	}
	switch p.Action {
	case Allow, Warn, Refuse:
	default:
		return nil, fmt.Errorf("decode plan: unknown action %q: %w", p.Action, errdefs.ErrInvalidArgument)
	}
	switch p.Protection {
	case ProtectNone, ProtectNoSubmounts, ProtectRecover:
	default:
		return nil, fmt.Errorf("decode plan: unknown protection %q: %w", p.Protection, errdefs.ErrInvalidArgument)
	}
	return &p, nil
}

// RemovePlan deletes the plan of sandboxID, and the status file that
// kata-virtiofsd keeps for it with protection recover
// (<stateDir>/status/<id>.json, fsdaemon.StatusPath); one already gone
// is not an error (delete may run more than once).
func RemovePlan(stateDir, sandboxID string) error {
	if err := checkID(sandboxID); err != nil {
		return fmt.Errorf("remove plan: %w", err)
	}
	if err := os.Remove(PlanPath(stateDir, sandboxID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove plan: %w", err)
	}
	if err := os.Remove(filepath.Join(stateDir, "status", sandboxID+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove recovery status: %w", err)
	}
	return nil
}
