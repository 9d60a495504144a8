// Package oserr trims operating-system errors for messages that already
// name the file: "no such file or directory", not "stat /x: no such file
// or directory" after "/x".
package oserr

import (
	"errors"
	"os"
)

// Cause returns what went wrong in a path error, without its operation and
// path; any other error as it is.
func Cause(err error) error {
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
