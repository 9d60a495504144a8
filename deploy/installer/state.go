package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kata-submount-guard/kata-submount-guard/internal/atomicfile"
)

// state is what we changed, kept at GUARD_PREFIX/state/install.json so that
// Uninstall can undo it and a re-apply knows the delegates.
type state struct {
	// Containerd holds the main file's bytes before our last edit and
	// after it.
	Containerd *fileRecord `json:"containerd,omitempty"`
	// CtrdDropIn is our containerd drop-in, when kata-deploy uses drop-ins.
	CtrdDropIn string `json:"ctrd_drop_in,omitempty"`
	// Handlers maps each taken-over handler to its Kata shim.
	Handlers map[string]string `json:"handlers,omitempty"`
	// KataDropIns are the config.d files we wrote, CreatedDirs the
	// directories we had to make for them.
	KataDropIns []string `json:"kata_drop_ins,omitempty"`
	CreatedDirs []string `json:"created_dirs,omitempty"`
	// RestartPending: containerd has not yet been restarted since we
	// changed what it reads.
	RestartPending bool `json:"restart_pending,omitempty"`
}

type fileRecord struct {
	Path   string `json:"path"`
	Before []byte `json:"before"`
	After  []byte `json:"after"`
}

func (in *Installer) statePath() string {
	return in.host.abs(filepath.Join(in.opt.GuardPrefix, "state", "install.json"))
}

func (in *Installer) loadState() (*state, error) {
	st := &state{Handlers: map[string]string{}}
	data, err := os.ReadFile(in.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read install state: %w", err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("install state %s: %w; remove it to start afresh", in.statePath(), err)
	}
	if st.Handlers == nil {
		st.Handlers = map[string]string{}
	}
	return st, nil
}

func (in *Installer) saveState(st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(in.statePath(), data, 0o600)
}

// writeAtomic replaces path by a temporary file renamed over it; mode 0
// keeps the current file's mode (0644 for a new one).
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if mode == 0 {
		mode = 0o644
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteDurable(path, data, mode); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
