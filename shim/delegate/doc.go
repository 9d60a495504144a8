// Package delegate knows which upstream Kata shim the guard hands off to and
// resolves Kata's configuration by that shim's own rules. Kata's Go runtime
// before 4.0, its Go runtime from 4.0 on, and runtime-rs each choose their
// configuration file differently (config.DelegateKind); judging a file the
// delegate will not load would let a pod boot a kernel nobody checked. The
// kind comes from [submount_guard] delegate_kind, or from the delegate
// binary's own --version ("Kata Containers containerd shim (Golang): id:
// ..., version: 4.1.0, commit: ..."), cached per binary identity under
// state_dir so that a start pays for it once per installed binary.
package delegate
