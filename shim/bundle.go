package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
)

const (
	// specFile is the OCI runtime spec containerd writes into the bundle.
	specFile = "config.json"
	// noteFile is what start leaves in the bundle for delete: the delegate
	// and state directory it used. delete gets no runtime options, so it
	// could not otherwise find a configuration chosen by them. containerd
	// removes the bundle, and the note with it.
	noteFile = "kata-submount-guard.json"
	// maxSpecSize caps how much of config.json is read.
	maxSpecSize = 16 << 20
)

// readAnnotations returns the annotations of the bundle's OCI spec. A bundle
// without a spec is an error wrapping errdefs.ErrNotFound.
func readAnnotations(bundle string) (map[string]string, error) {
	path := filepath.Join(bundle, specFile)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("bundle spec %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("bundle spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("bundle spec %s: %w", path, err)
	}
	ann, err := parseAnnotations(data)
	if err != nil {
		return nil, fmt.Errorf("bundle spec %s: %w", path, err)
	}
	return ann, nil
}

// parseAnnotations returns the annotations of an OCI runtime spec.
func parseAnnotations(data []byte) (map[string]string, error) {
	if len(data) > maxSpecSize {
		return nil, fmt.Errorf("larger than %d bytes: %w", maxSpecSize, errdefs.ErrInvalidArgument)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return spec.Annotations, nil
}

// handoffNote is the content of noteFile.
type handoffNote struct {
	ID           string `json:"id"`
	SandboxID    string `json:"sandbox_id"`
	ConfigPath   string `json:"config_path"`
	DelegateShim string `json:"delegate_shim"`
	StateDir     string `json:"state_dir"`
}

func writeNote(bundle string, n handoffNote) error {
	data, err := json.Marshal(n)
	if err != nil {
		return err
	}
	path := filepath.Join(bundle, noteFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readNote(bundle string) (*handoffNote, error) {
	path := filepath.Join(bundle, noteFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", path, errdefs.ErrNotFound)
		}
		return nil, err
	}
	var n handoffNote
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if n.DelegateShim == "" || n.StateDir == "" {
		return nil, fmt.Errorf("%s: incomplete: %w", path, errdefs.ErrInvalidArgument)
	}
	return &n, nil
}

func removeNote(bundle string) {
	_ = os.Remove(filepath.Join(bundle, noteFile))
}
