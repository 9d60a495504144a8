// Package statedir owns the layout of kata-submount-guard's state directory
// ([submount_guard] state_dir, Default unless configured): every program
// that reads or writes there names its files through this package, so the
// layout is spelled once. The shim writes plans and fills the kernel and
// delegate caches; kata-virtiofsd reads plans, writes recovery status and
// caches what it learnt about upstream virtiofsd binaries; kata-runtime
// reads and fills the kernel cache.
//
//	<state_dir>/<sandbox-id>.json            the sandbox's plan (hooks/plan)
//	<state_dir>/status/<sandbox-id>.json     recovery status of a share served with protection recover
//	<state_dir>/kernel-cache/                facts of inspected guest kernel images (verdict.Cache)
//	<state_dir>/virtiofsd-cache/             upstream virtiofsd flavours (virtiofsd.Detect)
//	<state_dir>/delegate-cache/              delegate shim identities (shim/delegate)
//
// Status files have a directory of their own so that one can never take a
// plan's name.
package statedir
