// Package config reads Kata Containers' configuration exactly as Kata's Go
// runtime does (katautils.LoadConfiguration and the shim's loadRuntimeConfig,
// Kata 3.x): which file is used (annotation, containerd runtime options,
// KATA_CONF_FILE, default paths), how config.d drop-ins merge, which
// [hypervisor.<name>] table is active, and how io.katacontainers.config.hypervisor.*
// annotations override it under enable_annotations and
// valid_virtio_fs_daemon_paths. It also reads our own [submount_guard] table,
// which Kata ignores, and applies its defaults. Nothing here prints or decides;
// package hooks/policy turns a Resolved configuration into a plan.
package config
