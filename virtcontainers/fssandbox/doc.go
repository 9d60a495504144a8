// Package fssandbox confines a file-server process the way virtiofsd does
// before it serves guest requests: in a child with new mount, PID and network
// namespaces whose root is pivoted to the shared directory (Mode namespace),
// or chrooted into it (Mode chroot), holding only the capabilities a
// passthrough file system needs.
//
// Confinement takes two steps: the supervisor (Spawn) starts the current
// executable again in the new namespaces and waits for it; that child
// (Setup) opens /proc/self/fd on a read-only procfs that shows only
// processes, changes its root (the share, nosuid and nodev in the namespace
// sandbox), drops capabilities and sets no_new_privs in all its threads;
// once only serving is left it installs a seccomp allow-list
// (RestrictSyscalls). Go changes all threads' capabilities only without cgo,
// so the binary must be built with CGO_ENABLED=0.
//
// Spec: namespaces(7), pivot_root(2), capabilities(7) ("Transformation of
// capabilities during execve()"), proc(5) (subset=pid), mount_setattr(2),
// seccomp(2), and virtiofsd's --sandbox and --seccomp options.
package fssandbox
