package verdict

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	key := Key{Dev: 1, Ino: 2, Size: 3, MtimeNs: 4, CtimeNs: 5, Limit: DefaultMaxDecompressed}
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

// The regular expressions the hand-written matchers of version.go implement.
var (
	releaseRE    = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?(.*)$`)
	rcRE         = regexp.MustCompile(`^-rc(\d+)(.*)$`)
	debianTailRE = regexp.MustCompile(`^Debian (\d+\.\d+(?:\.\d+)?(?:~rc\d+)?)(\S*) \(\d{4}-\d{2}-\d{2}\)`)
	ubuntuRE     = regexp.MustCompile(`#\d+(?:~[0-9.]+)?-Ubuntu\b`)
)

// checkMatchers compares each matcher with its regular expression on s.
func checkMatchers(t *testing.T, s string) {
	t.Helper()
	major, minor, sub, rest, ok := splitRelease(s)
	if m := releaseRE.FindStringSubmatch(s); m == nil {
		require.False(t, ok, "release %q", s)
	} else {
		require.True(t, ok, "release %q", s)
		require.Equal(t, m[1:], []string{major, minor, sub, rest}, "release %q", s)
	}
	if !strings.Contains(s, "\n") { // splitRC sees a release's rest only
		n, after, ok := splitRC(s)
		if m := rcRE.FindStringSubmatch(s); m == nil {
			require.False(t, ok, "rc %q", s)
		} else {
			require.True(t, ok, "rc %q", s)
			require.Equal(t, m[1:], []string{n, after}, "rc %q", s)
		}
	}
	version, suffix, ok := matchDebianTail(s)
	if m := debianTailRE.FindStringSubmatch(s); m == nil {
		require.False(t, ok, "debian tail %q", s)
	} else {
		require.True(t, ok, "debian tail %q", s)
		require.Equal(t, m[1:], []string{version, suffix}, "debian tail %q", s)
	}
	require.Equal(t, ubuntuRE.MatchString(s), hasUbuntuTag(s), "ubuntu %q", s)
}

func TestMatchers(t *testing.T) {
	for _, s := range []string{
		"", "6", "6.", "6.1", "6.1.", "6.1.76", "6.1.76+", "6.1.x", "6.1.0-18-amd64", "6.7.0-rc4", "6.7.0-rc4-00012-gabc",
		"6.7-rc", "6.7-rc0", "6.1.76\n", "6.1\n.76", "12.34.56.78", "-rc7", "-rc7x", "-rc", "a6.1",
		"Debian 6.1.76-1 (2024-02-01)", "Debian 6.1.76-1 (2024-02-01) trailing", "Debian 6.7~rc7-1~exp1 (2023-12-27)",
		"Debian 6.1.76-1\t(2024-02-01)", "Debian 6.1.76-1 (2024-2-01)", "Debian 6.1 (2024-02-01)", "Debian 6.1.x (2024-02-01)",
		"Debian 6.1.~rc (2024-02-01)", "Debian 6 (2024-02-01)", "Debian 6.1.76-1 (2024-02-01", "Debian 6.1.76\v-1 (2024-02-01)",
		"#101-Ubuntu SMP", "#101~22.04.1-Ubuntu", "#101~-Ubuntu", "#-Ubuntu", "#1-Ubuntux", "#1-Ubuntu_", "#1-Ubuntu-", "#1-Ubuntu\xff",
		"x#1 #2-Ubuntu", "##3-Ubuntu", "#1~2.3~4-Ubuntu",
	} {
		checkMatchers(t, s)
	}
}

// FuzzMatchers: each hand-written matcher agrees with its regular
// expression.
func FuzzMatchers(f *testing.F) {
	f.Add("6.7.0-rc4-00012-gabcdef")
	f.Add("Debian 6.1.76-1 (2024-02-01)")
	f.Add("Linux version 5.15.0-91-generic (b@h) (gcc) #101~20.04.1-Ubuntu SMP")
	f.Fuzz(func(t *testing.T, s string) {
		checkMatchers(t, s)
	})
}
