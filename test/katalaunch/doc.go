// Package katalaunch starts a virtio-fs daemon the way Kata's own launchers
// do, so that tests can hold kata-virtiofsd to each launch contract: the
// Go runtime's virtiofsd type run from Kata's own source (Go tags 3.0.2,
// 3.2.0 and 4.1.0, compiled with a test-only fixture into a copy of the tree
// test/setup/70-kata.sh extracted under $KSG_CACHE/kata), and runtime-rs
// 4.1.0's standalone virtio-fs start re-done step by step in Go from its
// source (RuntimeRS), whose crates cannot be built here.
package katalaunch
