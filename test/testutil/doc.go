// Package testutil gates tests on what they need (root, containerd, a VM, the
// test assets under KSG_CACHE): on a developer's machine a missing need skips
// the test with the reason; under CI=true it fails it, because CI installs
// everything and a skip there would hide a broken install step.
package testutil
