package guestkernel

import (
	"bytes"
	"context"
	"io"
	"strings"
)

const (
	bannerPrefix = "Linux version "
	// maxBanner bounds a banner line; real ones are about 200 bytes.
	maxBanner = 1024
	// scanChunk is how much of an image is read at a time while scanning.
	scanChunk = 1 << 20
)

// validBanner reports whether line (without its newline) looks like
// init/version.c's linux_banner: "Linux version RELEASE (...) ...". Format
// strings and messages that merely mention "Linux version" fail.
func validBanner(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte(bannerPrefix))
	if !ok || len(rest) == 0 || rest[0] < '0' || rest[0] > '9' {
		return false
	}
	if !bytes.Contains(rest, []byte(" (")) || !bytes.Contains(rest, []byte("#")) {
		return false
	}
	for _, c := range line {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// bannerIn returns the first valid banner in b, or "".
func bannerIn(b []byte) string {
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(bannerPrefix))
		if i < 0 {
			return ""
		}
		start := off + i
		end := bytes.IndexByte(b[start:min(len(b), start+maxBanner)], '\n')
		if end > 0 && validBanner(b[start:start+end]) {
			return string(b[start : start+end])
		}
		off = start + len(bannerPrefix)
	}
}

// scanBanner looks for the banner in r[off:off+n], a chunk at a time so a
// banner near the start costs little. Chunks overlap by maxBanner so a
// banner across a boundary is still found.
func scanBanner(ctx context.Context, r io.ReaderAt, off, n int64) (string, error) {
	buf := make([]byte, min(n, scanChunk+maxBanner))
	for pos := int64(0); pos < n; pos += scanChunk {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		want := min(int64(len(buf)), n-pos)
		got, err := r.ReadAt(buf[:want], off+pos)
		if err != nil && err != io.EOF {
			return "", err
		}
		if s := bannerIn(buf[:got]); s != "" {
			return s, nil
		}
		if int64(got) < want {
			break
		}
	}
	return "", nil
}

// releaseOf returns the release in a banner ("Linux version 6.1.0-18-amd64
// (...") or in a bzImage header version string ("6.1.0-18-amd64 (...").
func releaseOf(banner string) string {
	s := strings.TrimPrefix(banner, bannerPrefix)
	if i := strings.IndexByte(s, ' '); i >= 0 {
		s = s[:i]
	}
	return s
}
