// Command runtimepath stands in for the CRI runtime_path that Debian 12's
// containerd 1.6.20 drops: its client never sends TaskInfo.RuntimePath
// (fixed in containerd 1.6.21 by f49254f0b, "WithRuntimePath uses the
// TaskInfo.RuntimePath field"), so containerd looks for
// containerd-shim-<name>-v2 on its PATH for runtime_type io.containerd.<name>.v2
// whatever runtime_path says. The cluster harness links this program under
// those names first on containerd's PATH; run as one, it reads containerd's
// config file (KSG_CONTAINERD_CONFIG, and the files it imports) as it is
// now and execs the runtime_path of the runtime with that runtime_type,
// with the same arguments, environment and directory: what a fixed
// containerd runs.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"
)

// ConfigEnv names containerd's config file.
const ConfigEnv = "KSG_CONTAINERD_CONFIG"

func main() {
	path, err := resolve(filepath.Base(os.Args[0]), os.Getenv(ConfigEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "runtimepath: %v\n", err)
		os.Exit(1)
	}
	argv := append([]string{path}, os.Args[1:]...)
	err = syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "runtimepath: exec %s: %v\n", path, err)
	os.Exit(1)
}

type config struct {
	Imports []string                  `toml:"imports"`
	Plugins map[string]toml.Primitive `toml:"plugins"`
}

type cri struct {
	Containerd struct {
		Runtimes map[string]struct {
			Type string `toml:"runtime_type"`
			Path string `toml:"runtime_path"`
		} `toml:"runtimes"`
	} `toml:"containerd"`
}

// resolve finds the runtime_path of the runtime whose runtime_type is the
// one containerd maps to the shim binary name: containerd-shim-<n>-v2 is
// io.containerd.<n>.v2. Imported files are read after the main one; as
// containerd 1.6 merges them, a file's CRI plugin section replaces the
// whole section of the files before it.
func resolve(binary, configPath string) (string, error) {
	if configPath == "" {
		return "", fmt.Errorf("%s is not set", ConfigEnv)
	}
	name, ok := strings.CutPrefix(binary, "containerd-shim-")
	name, ok2 := strings.CutSuffix(name, "-v2")
	if !ok || !ok2 || name == "" {
		return "", fmt.Errorf("run as containerd-shim-<name>-v2, not %s", binary)
	}
	runtimeType := "io.containerd." + name + ".v2"
	files := []string{configPath}
	found, from := "", ""
	for i := 0; i < len(files); i++ {
		var c config
		md, err := toml.DecodeFile(files[i], &c)
		if err != nil {
			return "", err
		}
		if i == 0 {
			for _, imp := range c.Imports {
				m, _ := filepath.Glob(imp)
				files = append(files, m...)
			}
		}
		p, ok := c.Plugins["io.containerd.grpc.v1.cri"]
		if !ok {
			continue
		}
		var cr cri
		if err := md.PrimitiveDecode(p, &cr); err != nil {
			return "", fmt.Errorf("%s: %w", files[i], err)
		}
		found, from = "", files[i]
		for handler, r := range cr.Containerd.Runtimes {
			if r.Type != runtimeType || r.Path == "" {
				continue
			}
			if found != "" && found != r.Path {
				return "", fmt.Errorf("%s: handler %s and another name different runtime_path for %s (%s, %s)", files[i], handler, runtimeType, r.Path, found)
			}
			found = r.Path
		}
	}
	if found == "" {
		return "", fmt.Errorf("no runtime with runtime_type %q and a runtime_path in %s", runtimeType, from)
	}
	return found, nil
}
