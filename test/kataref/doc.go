// Package kataref tests kata-submount-guard against Kata's own code: Kata's
// Go runtime of every tag archived in ../shared/upstream, built by
// test/setup/70-kata.sh into $KSG_CACHE/kata/<tag>. A small oracle
// (testdata/ksg_oracle_test.go.in, our own code) is compiled into a copy of
// Kata's containerd-shim-v2 package and answers, with Kata's own
// loadRuntimeConfig and oci.SandboxConfig, which configuration file Kata
// loads and which hypervisor values it ends with; the tests compare that with
// what package config and package delegate resolve. Kata's shim logs to
// syslog, so the oracle runs under testutil.PrivateSyslog: a /dev of its own
// whose /dev/log the test owns; the host's /dev/log is never touched.
package kataref
