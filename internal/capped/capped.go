package capped

import "io"

// Writer passes the first N bytes written to it on to W and drops the rest.
type Writer struct {
	W io.Writer
	N int
}

func (l *Writer) Write(p []byte) (int, error) {
	if l.N > 0 {
		keep := min(len(p), l.N)
		l.N -= keep
		if _, err := l.W.Write(p[:keep]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
