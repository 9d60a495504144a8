package standin

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/protobuf/proto"
	"github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime/v2/runc/manager"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/typeurl/v2"
)

// RuntimeName is the name the stand-in reports in its logs.
const RuntimeName = "io.containerd.standin.v2"

// NewManager returns containerd's runc shim manager wrapped so that start
// records what it received first.
func NewManager(name string) shim.Manager {
	return recordingManager{Manager: manager.NewShimManager(name)}
}

type recordingManager struct {
	shim.Manager
}

func (m recordingManager) Start(ctx context.Context, id string, opts shim.StartOpts) (string, error) {
	if dir := os.Getenv(RecordDirEnv); dir != "" {
		rec, err := startRecord(id, os.Stdin)
		if err != nil {
			return "", err
		}
		if err := writeRecord(StartRecordPath(dir, id), rec); err != nil {
			return "", err
		}
	}
	// runc's manager reads stdin for runc options only; Kata's options are
	// not among them, so it finding stdin drained changes nothing.
	return m.Manager.Start(ctx, id, opts)
}

// Stop is the `delete` action: record the invocation, then let runc's
// manager clean up.
func (m recordingManager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	if dir := os.Getenv(RecordDirEnv); dir != "" {
		cwd, _ := os.Getwd()
		rec := &DeleteRecord{ID: id, Argv: os.Args, Cwd: cwd}
		if err := writeRecord(DeleteRecordPath(dir, id), rec); err != nil {
			return shim.StopStatus{}, err
		}
	}
	return m.Manager.Stop(ctx, id)
}

func startRecord(id string, stdin io.Reader) (*StartRecord, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, fmt.Errorf("stand-in: read stdin: %w", err)
	}
	rec := &StartRecord{ID: id, Argv: os.Args, Env: os.Environ(), Cwd: cwd, Stdin: data}
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				rec.SigBlk = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
				rec.SigIgn = strings.TrimSpace(v)
			}
		}
	}
	if len(data) > 0 {
		var a types.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return nil, fmt.Errorf("stand-in: stdin is not a protobuf Any: %w", err)
		}
		if v, err := typeurl.UnmarshalAny(&a); err == nil {
			if o, ok := v.(*runtimeoptions.Options); ok {
				rec.StdinConfigPath = o.ConfigPath
			}
		}
	}
	return rec, nil
}
