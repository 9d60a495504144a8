//go:build tools

package tools

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/cilium/ebpf/btf"
	_ "github.com/containerd/containerd/errdefs"
	_ "github.com/containerd/containerd/events"
	_ "github.com/containerd/containerd/log"
	_ "github.com/containerd/containerd/pkg/process"
	_ "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	_ "github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/task"
	_ "github.com/containerd/containerd/runtime/v2/shim"
	_ "github.com/containerd/ttrpc"
	_ "github.com/containerd/typeurl/v2"
	_ "github.com/hanwen/go-fuse/v2/fuse"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/pierrec/lz4/v4"
	_ "github.com/sirupsen/logrus"
	_ "github.com/stretchr/testify/require"
	_ "github.com/ulikunitz/xz"
	_ "github.com/ulikunitz/xz/lzma"
	_ "github.com/urfave/cli/v2"
	_ "golang.org/x/sys/unix"
)
