package standin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/runc/task"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
)

// Kata's lookup order (src/runtime/pkg/containerd-shim-v2/create.go and
// katautils.GetDefaultConfigFilePaths).
const (
	configPathAnnotation = "io.katacontainers.config_path"
	confFileEnv          = "KATA_CONF_FILE"
)

var defaultConfigPaths = []string{
	"/etc/kata-containers/configuration.toml",
	"/usr/share/defaults/kata-containers/configuration.toml",
}

// RegisterTaskPlugin registers the stand-in's ttrpc task service with
// containerd's shim plugin graph, the way runc's task/plugin package does.
func RegisterTaskPlugin() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			runc, err := task.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			return &service{TaskService: runc, recordDir: os.Getenv(RecordDirEnv)}, nil
		},
	})
}

// service is runc's task service with a Create that takes Kata's options.
type service struct {
	taskAPI.TaskService
	recordDir string
}

var _ taskAPI.TaskService = (*service)(nil)

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// Create records the configuration file Kata would have used, then lets runc
// create the container without Kata's options (runc would fail on them).
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	rec := CreateRecord{ID: r.ID, Bundle: r.Bundle}
	var kataOpts *runtimeoptions.Options
	if r.Options.GetValue() != nil {
		rec.OptionsType = r.Options.GetTypeUrl()
		v, err := typeurl.UnmarshalAny(r.Options)
		if err != nil {
			return nil, fmt.Errorf("stand-in: decode runtime options: %w", err)
		}
		switch o := v.(type) {
		case *runtimeoptions.Options:
			kataOpts = o
			r.Options = nil
		case *runcoptions.Options:
		default:
			return nil, fmt.Errorf("stand-in: runtime options of type %T: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	path, source, err := kataConfigPath(r.Bundle, kataOpts)
	if err != nil {
		return nil, err
	}
	rec.ConfigPath, rec.ConfigSource = path, source
	if s.recordDir != "" {
		if err := writeRecord(CreateRecordPath(s.recordDir, r.ID), rec); err != nil {
			return nil, err
		}
	}
	return s.TaskService.Create(ctx, r)
}

// kataConfigPath picks the configuration file the way Kata's shim does at
// Create: annotation, runtime options, KATA_CONF_FILE, first default found.
func kataConfigPath(bundle string, opts *runtimeoptions.Options) (path, source string, err error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", "", fmt.Errorf("stand-in: read bundle spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", "", fmt.Errorf("stand-in: decode bundle spec: %w", err)
	}
	if p := spec.Annotations[configPathAnnotation]; p != "" {
		return p, "annotation", nil
	}
	if opts != nil && opts.ConfigPath != "" {
		return opts.ConfigPath, "runtime-options", nil
	}
	if p := os.Getenv(confFileEnv); p != "" {
		return p, "env", nil
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return p, "default", nil
		}
	}
	return defaultConfigPaths[len(defaultConfigPaths)-1], "default", nil
}
