// Package capped keeps what a child process prints within a bound: a Writer
// keeps the first N bytes written to it and drops the rest while still
// reporting them written, so a runaway child can neither fill our memory
// nor block on a full pipe.
package capped
