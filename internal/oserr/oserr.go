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
