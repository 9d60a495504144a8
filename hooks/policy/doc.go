// Package policy makes the sandbox-creation decision of kata-submount-guard
// ("hooks" here means the shim's sandbox-creation hook point, not OCI
// hooks): a fixed sequence of steps (shared file system, guest kernel,
// virtiofsd protection) runs over one Input and fills one plan.Plan (allow,
// warn or refuse, with the reason, the kernel evidence and the virtiofsd
// protection). The shim and kata-runtime check/env call the same Decide, so
// check predicts what start does; each passes the guest kernel Inspector
// (kata-runtime: guestkernel.Inspect; the shim: the inspection cache, then
// kata-runtime), so that this package links no image parser. Nothing here
// prints.
package policy
