package config

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// DelegateKind is the kind of upstream Kata shim the guard hands off to. Each
// kind chooses its configuration file by its own rules, so the guard must
// know which one runs before it judges a file.
type DelegateKind string

const (
	// DelegateAuto asks the delegate binary (its --version); only a
	// setting, never a resolved kind.
	DelegateAuto DelegateKind = "auto"
	// DelegateGo3 is Kata's Go runtime before 4.0 (2.x and 3.x): the
	// io.katacontainers.config_path annotation, then the runtime option
	// ConfigPath, then KATA_CONF_FILE, then the default paths.
	DelegateGo3 DelegateKind = "go-3"
	// DelegateGo4 is Kata's Go runtime 4.0 and later (loadRuntimeConfig in
	// src/runtime/pkg/containerd-shim-v2/create.go, 4.1.0): the annotation
	// is gone; ConfigPath, then KATA_CONF_FILE only if it is a shipped
	// default path, then the default paths.
	DelegateGo4 DelegateKind = "go-4"
	// DelegateRuntimeRS is Kata's Rust runtime (load_config in
	// src/runtime-rs/crates/runtimes/src/manager.rs, 4.1.0): KATA_CONF_FILE
	// (shipped paths only) before the option config_path, its own default
	// paths, [runtime] hypervisor_name choosing the table.
	DelegateRuntimeRS DelegateKind = "runtime-rs"
)

// DelegateKinds lists the values [submount_guard] delegate_kind takes.
func DelegateKinds() []string {
	return []string{string(DelegateAuto), string(DelegateGo3), string(DelegateGo4), string(DelegateRuntimeRS)}
}

// Describe names the kind for people.
func (k DelegateKind) Describe() string {
	switch k {
	case DelegateGo3:
		return "Kata's Go runtime 2.x/3.x"
	case DelegateGo4:
		return "Kata's Go runtime 4.x"
	case DelegateRuntimeRS:
		return "Kata's runtime-rs"
	}
	return string(k)
}

// RuntimeRSDefaultConfigPaths are runtime-rs's default configuration files,
// in its order (DEFAULT_RUNTIME_CONFIGURATIONS, kata-types
// src/config/default.rs, 4.1.0).
func RuntimeRSDefaultConfigPaths() []string {
	return []string{
		"/etc/kata-containers/runtime-rs/configuration.toml",
		"/usr/share/defaults/kata-containers/runtime-rs/configuration.toml",
		"/opt/kata/share/defaults/kata-containers/runtime-rs/configuration.toml",
	}
}

// defaultPathsFor returns the default paths of kind, or the test override.
func (src Sources) defaultPathsFor(kind DelegateKind) []string {
	if kind == DelegateRuntimeRS {
		if src.RuntimeRSDefaultPaths != nil {
			return src.RuntimeRSDefaultPaths
		}
		return RuntimeRSDefaultConfigPaths()
	}
	if src.DefaultPaths != nil {
		return src.DefaultPaths
	}
	return DefaultConfigPaths()
}

// isShipped is Kata 4's isShippedKataConfigPath (Go) and
// is_shipped_kata_config_path (runtime-rs): the file, symlinks resolved, is
// one of the kind's default paths, symlinks resolved.
func isShipped(root, path string, defaults []string) bool {
	resolved, err := resolveIn(root, path)
	if err != nil {
		return false
	}
	for _, d := range defaults {
		if rd, err := resolveIn(root, d); err == nil && rd == resolved {
			return true
		}
	}
	return false
}

// errNotShipped is the refusal of Kata 4 (both runtimes) for a KATA_CONF_FILE
// outside the shipped paths, in Kata's words, and what to do instead.
func errNotShipped(kind DelegateKind, path string, defaults []string) error {
	return fmt.Errorf("invalid KATA_CONF_FILE %q: only shipped Kata configuration files are accepted (%s refuses it and would not start the sandbox; shipped: %s); name the file in the runtime's options.ConfigPath instead: %w",
		path, kind.Describe(), strings.Join(defaults, ", "), errdefs.ErrInvalidArgument)
}

// choosePathFor finds the configuration file as a delegate of kind does.
func choosePathFor(ctx context.Context, src Sources, kind DelegateKind) (string, Source, error) {
	var (
		path   string
		source Source
	)
	env := ""
	if src.Getenv != nil {
		env = src.Getenv(EnvConfigFile)
	}
	defaults := src.defaultPathsFor(kind)
	switch kind {
	case DelegateGo3:
		if p := src.Annotations[AnnotationConfigPath]; p != "" {
			path, source = p, SourceAnnotation
		}
		if path == "" {
			p, err := src.RuntimeOptions.ConfigPath, src.RuntimeOptions.Err
			if err != nil {
				return "", "", err
			}
			if p != "" {
				path, source = p, SourceRuntimeOptions
			}
		}
		if path == "" && env != "" {
			path, source = env, SourceEnv
		}
	case DelegateGo4:
		p, err := src.RuntimeOptions.ConfigPath, src.RuntimeOptions.Err
		if err != nil {
			return "", "", err
		}
		if p != "" {
			path, source = p, SourceRuntimeOptions
		} else if env != "" {
			if !isShipped(src.Root, env, defaults) {
				return "", "", errNotShipped(kind, env, defaults)
			}
			path, source = env, SourceEnv
		}
	case DelegateRuntimeRS:
		if env != "" {
			if !isShipped(src.Root, env, defaults) {
				return "", "", errNotShipped(kind, env, defaults)
			}
			path, source = env, SourceEnv
		} else {
			// runtime-rs parses the options and, when they do not
			// parse, warns and falls back to the default paths.
			p, err := src.RuntimeOptions.ConfigPath, src.RuntimeOptions.Err
			if err != nil {
				log.G(ctx).WithError(err).Warn("runtime options do not parse; runtime-rs falls back to its default configuration paths, and so do we")
			}
			if p != "" {
				path, source = p, SourceRuntimeOptions
			}
		}
	default:
		return "", "", fmt.Errorf("unknown delegate kind %q: %w", kind, errdefs.ErrInvalidArgument)
	}
	if path == "" && src.ExplicitPath != "" {
		path, source = src.ExplicitPath, SourceFlag
	}
	if path != "" {
		resolved, err := resolveIn(src.Root, path)
		if err != nil {
			return "", "", fmt.Errorf("configuration file from %s: %w", describeSource(source), err)
		}
		return resolved, source, nil
	}
	for _, p := range defaults {
		if resolved, err := resolveIn(src.Root, p); err == nil {
			return resolved, SourceDefault, nil
		}
	}
	names := "the runtime option ConfigPath or KATA_CONF_FILE"
	if kind == DelegateGo3 {
		names = AnnotationConfigPath + ", " + names
	}
	return "", "", fmt.Errorf("no Kata configuration file for %s: none of %s exists; install one or name it with %s: %w",
		kind.Describe(), strings.Join(defaults, ", "), names, errdefs.ErrNotFound)
}

// OperatorPath finds the file the operator's own sources name, before the
// delegate is known: the runtime option ConfigPath, KATA_CONF_FILE, the
// --config flag, then every kind's default paths. Pod annotations are never
// read here, so a pod cannot choose which delegate_shim (and so which
// rules) decide its own sandbox. The file found names the delegate; the
// delegate's own rules then choose the file that is judged.
func OperatorPath(src Sources) (string, error) {
	option, err := src.RuntimeOptions.ConfigPath, src.RuntimeOptions.Err
	if err != nil {
		return "", err
	}
	env := ""
	if src.Getenv != nil {
		env = src.Getenv(EnvConfigFile)
	}
	for _, c := range []struct {
		path   string
		source Source
	}{{option, SourceRuntimeOptions}, {env, SourceEnv}, {src.ExplicitPath, SourceFlag}} {
		if c.path == "" {
			continue
		}
		resolved, err := resolveIn(src.Root, c.path)
		if err != nil {
			return "", fmt.Errorf("configuration file from %s: %w", describeSource(c.source), err)
		}
		return resolved, nil
	}
	var defaults []string
	for _, p := range append(append([]string(nil), src.defaultPathsFor(DelegateGo4)...), src.defaultPathsFor(DelegateRuntimeRS)...) {
		if !contains(defaults, p) {
			defaults = append(defaults, p)
		}
	}
	for _, p := range defaults {
		if resolved, err := resolveIn(src.Root, p); err == nil {
			return resolved, nil
		}
	}
	return "", fmt.Errorf("no Kata configuration file: none of %s exists; install one or name it with the runtime option ConfigPath or KATA_CONF_FILE: %w",
		strings.Join(defaults, ", "), errdefs.ErrNotFound)
}
