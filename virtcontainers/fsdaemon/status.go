package fsdaemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/passthroughfs"
)

// maxStatusSize caps what ReadStatus reads; a status is a few hundred bytes.
const maxStatusSize = 64 << 10

// Status is the status file of a share served with protection recover,
// <state_dir>/status/<sandbox-id>.json, written by kata-virtiofsd: once when
// it starts serving, again whenever the recovery counters change, and a last
// time with running false when the daemon ends. The file is replaced
// atomically, so a reader sees one whole version. Its JSON form is a
// contract (tests and operators read it).
type Status struct {
	SandboxID  string `json:"sandbox_id"`
	Protection string `json:"protection"`
	// PID is the kata-virtiofsd process that serves the share.
	PID int `json:"pid"`
	// Running is false once the daemon has ended.
	Running bool      `json:"running"`
	Updated time.Time `json:"updated"`
	passthroughfs.RecoveryStats
}

// writeStatus replaces the file at path with s: written to a temporary file
// beside it and renamed over it. The directory is created 0700 if missing;
// the file is 0600.
func writeStatus(path string, s *Status) (err error) {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write status %s: %w", path, err)
	}
	return nil
}

// ReadStatus reads the status file at path.
func ReadStatus(path string) (*Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStatusSize+1))
	if err != nil {
		return nil, fmt.Errorf("read status %s: %w", path, err)
	}
	s, err := decodeStatus(data)
	if err != nil {
		return nil, fmt.Errorf("read status %s: %w", path, err)
	}
	return s, nil
}

// decodeStatus parses a status file strictly: unknown fields and trailing
// data are errors.
func decodeStatus(data []byte) (*Status, error) {
	if len(data) > maxStatusSize {
		return nil, fmt.Errorf("status larger than %d bytes: %w", maxStatusSize, errdefs.ErrInvalidArgument)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Status
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode status: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode status: trailing data: %w", errdefs.ErrInvalidArgument)
	}
	return &s, nil
}
