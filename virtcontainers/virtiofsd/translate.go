package virtiofsd

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// Translate returns the arguments (without argv[0]) that make the upstream d
// serve the share described by o under protection p, on a host as h
// describes it (see ProbeHost):
//
//   - Rust target: o's own arguments, token for token, without the --guard-*
//     options; protection.NoSubmounts removes every --announce-submounts,
//     --no-announce-submounts and -o announce_submounts item and puts
//     --no-announce-submounts last when d has it (announcing is its default
//     and the last of the two flags wins). An option d's --help does not
//     list is refused.
//   - C target: the same behaviour spelt in QEMU's options (--shared-dir=D →
//     -o source=D, --cache=never → -o cache=none, announcing → -o
//     announce_submounts, ...), with Rust's defaults made explicit where the C
//     daemon's differ (killpriv_v2). protection.NoSubmounts omits -o
//     announce_submounts. An option the C daemon cannot honour is refused,
//     except the few that are harmless there (see cArgs).
//
// adapted says, one sentence each, where the command line was changed beyond
// spelling because of the host (to be logged as warnings): the C daemon loses
// --syslog when no syslog daemon answers at /dev/log, because its seccomp
// filter kills it at its first message otherwise.
//
// protection.Recover is never an upstream's job and is refused. Refusals wrap
// errdefs.ErrNotImplemented and name every offending argument.
func Translate(o *Options, d Daemon, p protection.Protection, h Host) (args, adapted []string, err error) {
	switch p {
	case protection.None, protection.NoSubmounts:
	case protection.Recover:
		return nil, nil, fmt.Errorf("protection %q is served by kata-virtiofsd itself, not by %s: %w", p, d, errdefs.ErrInvalidArgument)
	default:
		return nil, nil, fmt.Errorf("unknown protection %q (want %s, %s or %s): %w", p, protection.Recover, protection.NoSubmounts, protection.None, errdefs.ErrInvalidArgument)
	}
	switch d.Flavour {
	case FlavourRust:
		args, err = rustArgs(o, d, p)
		return args, nil, err
	case FlavourC:
		return cArgs(o, d, p, h)
	}
	return nil, nil, fmt.Errorf("upstream virtiofsd %s has unknown flavour %q: %w", d.Path, d.Flavour, errdefs.ErrNotImplemented)
}

// refusals collects the options a target cannot honour, each named as the
// command line gave it (or as its long option when it was not given, e.g. a
// default the target lacks).
type refusals struct {
	o     *Options
	names []string
}

func (r *refusals) add(key string) {
	if arg, ok := r.o.Given(key); ok {
		r.names = append(r.names, arg)
	} else {
		r.names = append(r.names, "--"+key)
	}
}

func (r *refusals) String() string { return strings.Join(r.names, ", ") }

// them is the pronoun for the refused options in an error.
func (r *refusals) them() string {
	if len(r.names) == 1 {
		return "it"
	}
	return "them"
}

// harmlessElsewhere returns the options given that change nothing on a
// daemon other than Rust's, as given (the table's harmless).
func harmlessElsewhere(o *Options) []string {
	var out []string
	for i := range options {
		op := &options[i]
		if op.harmless == nil {
			continue
		}
		if arg, ok := o.Given(op.givenKey()); ok && op.harmless(o) {
			out = append(out, arg)
		}
	}
	return out
}

// rustArgs replays o's tokens for a Rust virtiofsd. With protection.NoSubmounts
// every form that sets announcing, whichever way (--announce-submounts,
// --no-announce-submounts, the -o announce_submounts item, wherever Kata put
// them: its defaults, an annotation's appended extra args, runtime-rs's
// trailing --xattr after them), is taken out and --no-announce-submounts
// goes last: of the two flags the last one given wins in Rust virtiofsd, so
// nothing after it can turn announcing back on.
func rustArgs(o *Options, d Daemon, p protection.Protection) ([]string, error) {
	var out, cannot []string
	for _, a := range o.Args {
		if strings.HasPrefix(a.Name, "--guard-") {
			continue
		}
		if strings.HasPrefix(a.Name, "--") && !d.Supports(a.Name) {
			cannot = append(cannot, strings.Join(a.Tokens, " "))
			continue
		}
		if p == protection.NoSubmounts {
			switch a.Name {
			case "--announce-submounts", "--no-announce-submounts":
				continue
			case "-o":
				items := strings.Split(a.Value, ",")
				kept := make([]string, 0, len(items))
				for _, item := range items {
					if item != "announce_submounts" {
						kept = append(kept, item)
					}
				}
				if len(kept) == len(items) {
					break
				}
				if len(kept) > 0 {
					out = append(out, "-o", strings.Join(kept, ","))
				}
				continue
			}
		}
		out = append(out, a.Tokens...)
	}
	if len(cannot) > 0 {
		return nil, fmt.Errorf("%s does not accept %s (its --help does not list it): remove it from Kata's "+
			"virtio_fs_extra_args or use a newer virtiofsd: %w", d, strings.Join(cannot, ", "), errdefs.ErrNotImplemented)
	}
	// A Rust virtiofsd without --no-announce-submounts announces only when
	// asked to (before announcing became its default), so removing every
	// request was enough.
	if p == protection.NoSubmounts && d.Supports("--no-announce-submounts") {
		out = append(out, "--no-announce-submounts")
	}
	return out, nil
}

// cTarget is cArgs' work on one command line: each option's toC adds to
// out or refuses in r.
type cTarget struct {
	o       *Options
	d       Daemon
	p       protection.Protection
	h       Host
	out     []string
	adapted []string
	r       *refusals
}

// opt adds "-o name[=value]" when the daemon lists name; key names the
// Rust option that asked for it, for the error otherwise.
func (c *cTarget) opt(name, value, key string) {
	if !c.d.Supports(name) {
		c.r.add(key)
		return
	}
	if value == "" {
		c.out = append(c.out, "-o", name)
		return
	}
	c.out = append(c.out, "-o", name+"="+escapeFuseOpt(value))
}

// long adds "name[=value]" when the daemon lists name.
func (c *cTarget) long(name, value, key string) {
	if !c.d.Supports(name) {
		c.r.add(key)
		return
	}
	if value == "" {
		c.out = append(c.out, name)
		return
	}
	c.out = append(c.out, name+"="+value)
}

// cArgs spells o for QEMU's C virtiofsd, option by option in the table's
// order. Harmless on the C daemon, hence dropped: -f (it runs in the
// foreground anyway), --seccomp=kill (its fixed behaviour), --allow-mmap
// with --cache=auto|always (Rust ignores it there), -o no_flock / -o
// no_posix_lock (its defaults) and the table's harmless ones. Log levels
// map to the nearest: trace → debug, off → err. --syslog is dropped when h
// says no syslog daemon answers (see Translate).
func cArgs(o *Options, d Daemon, p protection.Protection, h Host) (out, adapted []string, err error) {
	c := &cTarget{o: o, d: d, p: p, h: h, r: &refusals{o: o}}
	for i := range options {
		op := &options[i]
		if op.toC != nil {
			op.toC(c)
		}
		if op.rustOnly != nil && op.rustOnly(o) {
			c.r.add(op.givenKey())
		}
	}
	if len(c.r.names) > 0 {
		return nil, nil, fmt.Errorf("%s cannot honour %s: remove %s from Kata's virtio_fs_cache/virtio_fs_extra_args, "+
			"or point --guard-upstream at the Rust virtiofsd: %w", d, c.r, c.r.them(), errdefs.ErrNotImplemented)
	}
	return c.out, c.adapted, nil
}

// escapeFuseOpt escapes a value for the C daemon's comma-separated -o
// parser, which takes a backslash to quote the next character.
func escapeFuseOpt(v string) string {
	if !strings.ContainsAny(v, `,\`) {
		return v
	}
	var b strings.Builder
	for _, r := range v {
		if r == ',' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
