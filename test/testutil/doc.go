// Package testutil gates tests on what they need (root, containerd, a VM, the
// test assets under KSG_CACHE): on a developer's machine a missing need skips
// the test with the reason; under CI=true it fails it, because CI installs
// everything and a skip there would hide a broken install step.
//
// It also runs programs that log to the local syslog daemon (Kata's shim,
// virtiofsd --syslog) with a /dev/log of the test's own (Syslog,
// PrivateSyslog) or none (NoSyslog), in a private mount namespace, so that
// tests pass the same whether or not the host has a syslog daemon, and never
// use or change the host's /dev/log.
package testutil
