package verdict

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func FuzzJudgeVersion(f *testing.F) {
	f.Add("6.1.0-18-amd64", bannerDebian)
	f.Add("6.7.0-rc4-00012-gabcdef", "")
	f.Add("5.15.0-91-generic", "Linux version 5.15.0-91-generic (b@h) (gcc) #101-Ubuntu SMP")
	f.Add("6.1.76+", bannerFixed61)
	f.Fuzz(func(t *testing.T, release, banner string) {
		r := &Report{Release: release, Banner: banner}
		Judge(r, nil)
		switch r.Verdict {
		case Fixed, Vulnerable, Unaffected:
			if r.Evidence != EvidenceVersion {
				t.Fatalf("%q/%q: %s by %s", release, banner, r.Verdict, r.Evidence)
			}
			if got := versionVerdict(readVersion(release, banner).Version); got != r.Verdict && !(got == Unaffected && r.Verdict == Unknown) {
				t.Fatalf("%q: verdict %s, version says %s", release, r.Verdict, got)
			}
		case Unknown:
		default:
			t.Fatalf("verdict %q", r.Verdict)
		}
		if r.Reason == "" {
			t.Fatal("no reason")
		}
	})
}

func FuzzCacheEntry(f *testing.F) {
	dir := f.TempDir()
	key := Key{Dev: 1, Ino: 2, Size: 3, MtimeNs: 4, Limit: DefaultMaxDecompressed}
	Cache{Dir: dir}.Store(context.Background(), key, &Report{Format: "elf", Release: "6.1.76"})
	good, err := os.ReadFile(filepath.Join(dir, key.name()))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, key.name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if facts, ok := (Cache{Dir: d}).Load(context.Background(), key); ok && facts == nil {
			t.Fatal("hit without facts")
		}
	})
}
