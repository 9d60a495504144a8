package virtiofsd

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// BenchmarkParseTranslate is the in-process work kata-virtiofsd adds to a
// sandbox start besides reading the plan: parse Kata's command line and
// translate it for each flavour.
func BenchmarkParseTranslate(b *testing.B) {
	args := kataArgv("--guard-state-dir=/run/x")
	for _, d := range []Daemon{rust113(), qemu72()} {
		b.Run(string(d.Flavour), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				o, err := Parse(args)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Translate(o, d, protection.NoSubmounts, Host{Syslog: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDetect compares a cached flavour look-up with probing the binary
// (two runs of it: --version and --help).
func BenchmarkDetect(b *testing.B) {
	path := cDaemon(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "virtiofsd")
	copyFile(b, path, bin, 0o755)
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		cache := filepath.Join(dir, "cache")
		if _, err := Detect(ctx, bin, cache); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := Detect(ctx, bin, cache); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("probe", func(b *testing.B) {
		for b.Loop() {
			if _, err := Detect(ctx, bin, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
