// Package katabuild compiles a test-only fixture of ours into a package of
// Kata's own Go runtime, as test/setup/70-kata.sh extracted it into
// $KSG_CACHE/kata/<tag>, so that tests run Kata's code as the reference.
// Nothing is written into Kata's extracted tree (the build works in a
// hard-link copy) nor into this repository; the test binary is cached beside
// the tree, keyed by the archive, the package, the fixture and the Go
// version, so each is built once.
package katabuild
