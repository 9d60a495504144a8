// Package hooks makes the sandbox-creation decision of kata-submount-guard:
// an ordered chain of small hooks (shared file system, guest kernel,
// virtiofsd protection, ...) runs over one Input and fills one Plan (allow,
// warn or refuse, with the reason, the kernel evidence and the virtiofsd
// protection). It also stores plans as <state_dir>/<sandbox-id>.json, written
// atomically (temp file + rename, 0600 in a 0700 directory), for
// kata-virtiofsd to read. The shim and kata-runtime check/env call the same
// Decide, so check predicts what start does; each passes the guest kernel
// Inspector (kata-runtime: guestkernel.Inspect; the shim: the inspection
// cache, then kata-runtime), so that this package links no image parser.
// Nothing here prints.
package hooks
