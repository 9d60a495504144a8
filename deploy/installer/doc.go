// Package installer is the node side of kata-submount-guard's kata-deploy
// companion (cmd/kata-submount-guard-deploy). Running in a privileged
// DaemonSet pod with the host's / at HOST_ROOT, it follows kata-deploy
// 4.1.0's layout: it finds the Kata runtime handlers kata-deploy configured
// in containerd (runtime_path at KATA_PREFIX/bin or KATA_PREFIX/runtime-rs/bin,
// options.ConfigPath at share/defaults/kata-containers[/runtime-rs]/runtimes/<shim>/),
// installs our three binaries under GUARD_PREFIX, writes
// config.d/90-submount-guard.toml beside each shim's configuration, then
// points the handler's runtime_path at our shim (in containerd's main file
// when kata-deploy wrote there, as it does for containerd < 2.0, or by a
// drop-in imported after kata-deploy's for containerd 2.x), restarts
// containerd, and labels the node with each shim's guest-kernel fix status
// and whether its pods are protected (an NFD feature file and direct
// labels): policy.Decide, the decision our shim makes at sandbox creation,
// run here on the shim's configuration read under HOST_ROOT. It re-applies whatever
// kata-deploy's reinstall undoes, within a second of the change (inotify),
// and Uninstall puts every file back as it found it: byte for byte when
// nobody changed the file since, else by reverting only its own edits.
package installer
