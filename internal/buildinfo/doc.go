// Package buildinfo names the source revision a binary was built from, for
// what must change whenever the code does (the guest kernel cache key).
package buildinfo
