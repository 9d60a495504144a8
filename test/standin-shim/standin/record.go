package standin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// RecordDirEnv names the directory the stand-in writes its records to.
const RecordDirEnv = "KSG_STANDIN_RECORD_DIR"

// StartRecord is what one `start` invocation received.
type StartRecord struct {
	ID    string   `json:"id"`
	Argv  []string `json:"argv"`
	Env   []string `json:"env"`
	Cwd   string   `json:"cwd"`
	Stdin []byte   `json:"stdin"`
	// StdinConfigPath is runtimeoptions.v1.Options.ConfigPath when stdin
	// carried Kata's runtime options.
	StdinConfigPath string `json:"stdin_config_path,omitempty"`
	// SigBlk and SigIgn are the blocked and ignored signal masks the
	// process started with (/proc/self/status): an exec hands them on.
	SigBlk string `json:"sig_blk"`
	SigIgn string `json:"sig_ign"`
}

// CreateRecord is what one Create request carried, and the configuration file
// Kata would have loaded for it.
type CreateRecord struct {
	ID          string `json:"id"`
	Bundle      string `json:"bundle"`
	OptionsType string `json:"options_type,omitempty"`
	// ConfigPath and ConfigSource follow Kata's order: annotation
	// io.katacontainers.config_path, then the runtime options' ConfigPath,
	// then KATA_CONF_FILE, then the default locations.
	ConfigPath   string `json:"config_path"`
	ConfigSource string `json:"config_source"`
}

// DeleteRecord is what one `delete` invocation received.
type DeleteRecord struct {
	ID   string   `json:"id"`
	Argv []string `json:"argv"`
	Cwd  string   `json:"cwd"`
}

// StartRecordPath, CreateRecordPath and DeleteRecordPath are where records for id are written.
func StartRecordPath(dir, id string) string  { return filepath.Join(dir, id+".start.json") }
func CreateRecordPath(dir, id string) string { return filepath.Join(dir, id+".create.json") }
func DeleteRecordPath(dir, id string) string { return filepath.Join(dir, id+".delete.json") }

// ReadStartRecord, ReadCreateRecord and ReadDeleteRecord read records back (for tests).
func ReadStartRecord(dir, id string) (*StartRecord, error) {
	var r StartRecord
	return &r, readJSON(StartRecordPath(dir, id), &r)
}

func ReadCreateRecord(dir, id string) (*CreateRecord, error) {
	var r CreateRecord
	return &r, readJSON(CreateRecordPath(dir, id), &r)
}

func ReadDeleteRecord(dir, id string) (*DeleteRecord, error) {
	var r DeleteRecord
	return &r, readJSON(DeleteRecordPath(dir, id), &r)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read stand-in record: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode stand-in record %s: %w", path, err)
	}
	return nil
}

// writeRecord writes v to path atomically, so a reader never sees half a file.
func writeRecord(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("stand-in record dir: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write stand-in record: %w", err)
	}
	return os.Rename(tmp, path)
}
