// Package atomicfile replaces a file in one step: the content goes to a
// temporary file in the same directory, which is then renamed over the
// target (rename(2) is atomic within a file system), so a concurrent reader
// sees the old file or the new one, never a part of either.
package atomicfile
