package virtiofsd

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// FuzzParse feeds command lines (arguments separated by NUL) to Parse and
// to both translations. A parse either fails with ErrInvalidArgument or gives
// options whose Rust translation without protection is the command line
// minus our --guard-* options, and whose no-submounts translation never
// asks for submounts and ends with --no-announce-submounts, its only
// announce flag. Seeded with every Kata launcher's argv.
func FuzzParse(f *testing.F) {
	for _, seed := range [][]string{
		kataArgv(),
		kataArgv("--guard-protection=no-submounts", "--guard-upstream=/usr/libexec/virtiofsd"),
		kataArgv("-o", "xattr,announce_submounts,cache=none", "-do", "source=/x"),
		{"--cache", "never", "--shared-dir", "/srv", "--socket-path", "/s", "--xattrmap=:map::user.:"},
		{"--print-capabilities"},
		kataGo302Argv("none"),
		kataGo4Argv(true, "--no-announce-submounts", "-o", "announce_submounts"),
		runtimeRS41Argv(rsSocket, true),
		runtimeRS41Argv("virtiofsd.sock", false, "--announce-submounts", "--socket-group=kvm"),
	} {
		f.Add(strings.Join(seed, "\x00"))
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		o, err := Parse(args)
		if err != nil {
			if o != nil || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Parse(%q) = %v, %v", args, o, err)
			}
			return
		}
		var want []string
		for _, a := range o.Args {
			if !strings.HasPrefix(a.Name, "--guard-") {
				want = append(want, a.Tokens...)
			}
		}
		got, _, err := Translate(o, rust113(), protection.None, noSyslog)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Translate(%q, rust, none) = %q, %v; want %q", args, got, err, want)
		}
		got, _, err = Translate(o, rust113(), protection.NoSubmounts, noSyslog)
		if err != nil {
			t.Fatalf("Translate(%q, rust, no-submounts): %v", args, err)
		}
		if len(got) == 0 || got[len(got)-1] != "--no-announce-submounts" || slices.Index(got, "--no-announce-submounts") != len(got)-1 {
			t.Fatalf("Translate(%q, rust, no-submounts) = %q: want one --no-announce-submounts, last", args, got)
		}
		for i, a := range got {
			if a == "--announce-submounts" || (i > 0 && got[i-1] == "-o" && slices.Contains(strings.Split(a, ","), "announce_submounts")) {
				t.Fatalf("Translate(%q, rust, no-submounts) = %q still announces", args, got)
			}
		}
		for _, p := range []protection.Protection{protection.None, protection.NoSubmounts} {
			for _, h := range []Host{noSyslog, withSyslog} {
				got, adapted, err := Translate(o, qemu72(), p, h)
				if err == nil && p == protection.NoSubmounts && slices.Contains(got, "announce_submounts") {
					t.Fatalf("Translate(%q, C, no-submounts) = %q still announces", args, got)
				}
				if err != nil && !errors.Is(err, errdefs.ErrNotImplemented) {
					t.Fatalf("Translate(%q, C, %s): %v", args, p, err)
				}
				// The C daemon gets --syslog only where a syslog daemon
				// answers, and a dropped one is always reported.
				if err == nil && slices.Contains(got, "--syslog") != (o.Syslog && h.Syslog) {
					t.Fatalf("Translate(%q, C, %s, %+v) = %q: --syslog wrong", args, p, h, got)
				}
				if err == nil && (len(adapted) > 0) != (o.Syslog && !h.Syslog) {
					t.Fatalf("Translate(%q, C, %s, %+v) adapted %q", args, p, h, adapted)
				}
			}
		}
		if _, err := CheckServe(o); err != nil && !errors.Is(err, errdefs.ErrNotImplemented) {
			t.Fatalf("CheckServe(%q): %v", args, err)
		}
		// Listen's rewrite of a --socket-path command line is a valid
		// command line that serves the inherited fd instead.
		if o.FD < 0 && o.SocketPath != "" {
			path := o.SocketPath
			o.useFD(1000, path)
			rewritten := argTokens(o)
			r, err := Parse(rewritten)
			if err != nil || r.FD != 1000 || r.SocketPath != "" || r.SocketGroup != "" || r.SharedDir != o.SharedDir {
				t.Fatalf("useFD(%q) = %q: parsed %+v, %v", args, rewritten, r, err)
			}
		}
	})
}

// FuzzParseVersion feeds --version and --help output to the parsers and
// holds them to the regular expressions that first defined both formats
// (regexpParseVersion, regexpParseHelp): the same flavour, version and
// options for any output.
func FuzzParseVersion(f *testing.F) {
	f.Add([]byte("virtiofsd 1.13.2\n"))
	f.Add([]byte("virtiofsd version 7.2.22 (Debian)\nCopyright\nusing FUSE kernel interface version 7.36\n"))
	f.Add([]byte("      --shared-dir <SHARED_DIR>\n  -h, --help\n    -o flock|no_flock\n"))
	f.Add([]byte("\n\n--after-empty-lines\n  -a,\n--on-next-line\n  -ab --not\n  ---no\n    -o a|/b|c_d/e|\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		flavour, version, err := parseVersion(out)
		if err == nil && (version == "" || (flavour != FlavourRust && flavour != FlavourC)) {
			t.Fatalf("parseVersion(%q) = %q, %q, nil", out, flavour, version)
		}
		wantFlavour, wantVersion, wantOK := regexpParseVersion(out)
		if flavour != wantFlavour || version != wantVersion || (err == nil) != wantOK {
			t.Fatalf("parseVersion(%q) = %q, %q, %v; the expressions give %q, %q, ok %v", out, flavour, version, err, wantFlavour, wantVersion, wantOK)
		}
		for _, fl := range []Flavour{FlavourRust, FlavourC} {
			opts := parseHelp(fl, out)
			if !slices.IsSorted(opts) {
				t.Fatalf("parseHelp(%q) not sorted: %q", out, opts)
			}
			if want := regexpParseHelp(fl, out); !slices.Equal(opts, want) {
				t.Fatalf("parseHelp(%s, %q) = %q; the expressions give %q", fl, out, opts, want)
			}
		}
	})
}

var (
	rustVersionRE = regexp.MustCompile(`^virtiofsd (\d+\.\d+\.\d+\S*)\s*$`)
	cVersionRE    = regexp.MustCompile(`^virtiofsd version (\d+\.\d+\.\d+)\S*`)
	longOptionRE  = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z],?\s+)?(--[a-z0-9][a-z0-9-]*)`)
	cCompatRE     = regexp.MustCompile(`(?m)^\s+-o ([a-z0-9_]+(?:[|/][a-z0-9_]+)*)`)
)

func regexpParseVersion(out []byte) (Flavour, string, bool) {
	first, rest, _ := bytes.Cut(out, []byte("\n"))
	first = bytes.TrimSpace(first)
	if m := rustVersionRE.FindSubmatch(first); m != nil && len(bytes.TrimSpace(rest)) == 0 {
		return FlavourRust, string(m[1]), true
	}
	if m := cVersionRE.FindSubmatch(first); m != nil && bytes.Contains(rest, []byte("FUSE kernel interface")) {
		return FlavourC, string(m[1]), true
	}
	return "", "", false
}

func regexpParseHelp(f Flavour, out []byte) []string {
	seen := map[string]bool{}
	for _, m := range longOptionRE.FindAllSubmatch(out, -1) {
		seen[string(m[1])] = true
	}
	if f == FlavourC {
		for _, m := range cCompatRE.FindAllSubmatch(out, -1) {
			for _, name := range strings.FieldsFunc(string(m[1]), func(r rune) bool { return r == '|' || r == '/' }) {
				seen[name] = true
			}
		}
	}
	return sortedNames(seen)
}
