// Package integration drives containerd-shim-kata-v2 through a private, real
// containerd 1.6 (ctr and CRI via crictl) with a locally built busybox image,
// handing off to the test stand-in shim (test/standin-shim), or to a real Kata
// shim when KATA_SHIM=/path is set. The tests run with KSG_INTEGRATION=1 as
// root; they follow containerd's runtime v2 shim contract
// (runtime/v2/README.md) and the CRI RuntimeService API.
package integration
