// Package plan is the record of one sandbox's sandbox-creation decision
// (allow, warn or refuse, the kernel evidence and the virtiofsd protection)
// and its store, <state_dir>/<sandbox-id>.json, written atomically (temp file
// + rename, 0600 in a 0700 directory) by the shim and read by kata-virtiofsd.
// "hooks" here means the shim's sandbox-creation hook point, not OCI hooks.
// Its JSON form is a contract between our binaries.
package plan
