package virtiofsd

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

// NoPlanFail is the --guard-no-plan value that refuses to start a share
// whose sandbox has no plan.
const NoPlanFail = "fail"

// CacheMode is --cache.
type CacheMode string

const (
	CacheAuto     CacheMode = "auto"
	CacheAlways   CacheMode = "always"
	CacheNever    CacheMode = "never"
	CacheMetadata CacheMode = "metadata"
)

// SandboxMode is --sandbox.
type SandboxMode string

const (
	SandboxNamespace SandboxMode = "namespace"
	SandboxChroot    SandboxMode = "chroot"
	SandboxNone      SandboxMode = "none"
)

// Arg is one option of the command line as it was given. A cluster of short
// options (`-df`) becomes one Arg per option.
type Arg struct {
	// Name is the option: "--cache", "-o", "-d", "--guard-upstream", ...
	Name string
	// Value is the option's value; empty for a flag without one.
	Value string
	// Tokens are the argv elements that gave it, e.g. ["--cache=auto"] or
	// ["--cache", "auto"].
	Tokens []string
}

// Guard holds kata-virtiofsd's own options. They never reach an upstream
// daemon.
type Guard struct {
	// Protection is --guard-protection: it overrides the sandbox's plan.
	Protection protection.Protection
	// Upstream is --guard-upstream: the virtiofsd to exec; it overrides the
	// plan's upstream_virtiofsd.
	Upstream string
	// StateDir is --guard-state-dir: where the plans are (statedir.Default).
	StateDir string
	// NoPlan is --guard-no-plan: what to do for a sandbox without a plan, a
	// Protection or NoPlanFail (default protection.None: exactly as Kata).
	NoPlan string
}

// Options is a virtiofsd command line as kata-virtiofsd understands it:
// every option Rust virtiofsd 1.13 accepts, with its defaults and its
// precedence (the last of a repeated option wins; `-o` compat options apply
// after all others; -d beats --log-level), plus the --guard-* options.
//
// It is what the launcher translates for an upstream daemon, and what
// kata-virtiofsd's own daemon receives when it serves the share itself: in
// that case the launcher has already set SandboxID, Protection and, for
// protection.NoSubmounts, cleared AnnounceSubmounts.
type Options struct {
	// Args is the command line, in order.
	Args []Arg

	// SharedDir is the directory to share (--shared-dir, -o source).
	SharedDir string
	// SandboxID is the Kata sandbox whose share this is, from SharedDir's
	// layout .../sandboxes/<id>/shared (Go runtime) or .../sandboxes/<id>/ro
	// (runtime-rs); empty when SharedDir has another form.
	SandboxID string

	// FD is the inherited listening vhost-user socket (--fd), or -1.
	FD int
	// SocketPath is where to create the socket when FD is -1 (--socket-path,
	// or the deprecated --socket).
	SocketPath  string
	SocketGroup string
	// Tag is the virtio-fs tag to advertise (--tag); empty: none.
	Tag string

	// ThreadPoolSize is --thread-pool-size; 0 serves requests on the
	// queue's own thread.
	ThreadPoolSize int
	Cache          CacheMode
	// AnnounceSubmounts sets FUSE_ATTR_SUBMOUNT on directories that are
	// mount points (Rust's default: on; --no-announce-submounts).
	AnnounceSubmounts bool
	// Xattr is --xattr as given; see XattrEnabled.
	Xattr         bool
	PosixACL      bool
	SecurityLabel bool
	XattrMap      string
	// NoReaddirplus is --no-readdirplus as given; see Readdirplus.
	NoReaddirplus    bool
	Writeback        bool
	AllowDirectIO    bool
	AllowMmap        bool
	KillprivV2       bool
	PreserveNoatime  bool
	ReadOnly         bool
	InodeFileHandles string // never, prefer, fallback (= prefer), mandatory
	Sandbox          SandboxMode
	Seccomp          string // kill, none, log, trap
	Modcaps          string
	// RlimitNofile is --rlimit-nofile, nil when not given.
	RlimitNofile *uint64
	UIDMap       []string
	GIDMap       []string
	TranslateUID []string
	TranslateGID []string

	MigrationMode          string // find-paths, file-handles
	MigrationOnError       string // abort, guest-error
	MigrationVerifyHandles bool
	MigrationConfirmPaths  bool

	LogLevel          string // error, warn, info, debug, trace, off
	Syslog            bool
	PrintCapabilities bool
	Foreground        bool // -f: no effect
	Help              bool
	Version           bool

	Guard Guard
	// Protection is the protection in force, set by the launcher once it has
	// read the plan; empty before.
	Protection protection.Protection

	// socketName is the socket path Listen created in place of
	// --socket-path, for messages; empty otherwise.
	socketName string

	// given maps an option's key (see Given) to the argument that last set it.
	given map[string]string
}

// Given returns how the command line set the option with key (a long name
// without dashes, e.g. "cache", "announce-submounts", "log-level"), e.g.
// "--cache=never" or "-o cache=none", and whether it set it at all.
func (o *Options) Given(key string) (string, bool) {
	s, ok := o.given[key]
	return s, ok
}

// XattrEnabled reports whether extended attributes are served: --xattr, or
// implied by --posix-acl, --security-label or --xattrmap.
func (o *Options) XattrEnabled() bool {
	return o.Xattr || o.PosixACL || o.SecurityLabel || o.XattrMap != ""
}

// Readdirplus reports whether READDIRPLUS is offered: not with --cache=never,
// not with --no-readdirplus.
func (o *Options) Readdirplus() bool {
	return o.Cache != CacheNever && !o.NoReaddirplus
}

// Parse reads a virtiofsd command line (without argv[0]). Errors wrap
// errdefs.ErrInvalidArgument and name the offending argument.
func Parse(args []string) (*Options, error) {
	o := &Options{
		FD:                -1,
		Cache:             CacheAuto,
		AnnounceSubmounts: true,
		InodeFileHandles:  "never",
		Sandbox:           SandboxNamespace,
		Seccomp:           "kill",
		MigrationMode:     "find-paths",
		MigrationOnError:  "abort",
		LogLevel:          "info",
		Guard:             Guard{StateDir: statedir.Default, NoPlan: string(protection.None)},
		given:             map[string]string{},
	}
	if err := o.split(args); err != nil {
		return nil, err
	}
	// Rust applies -o compat options after every other option.
	debug := false
	for _, a := range o.Args {
		var err error
		switch {
		case a.Name == "-o":
			continue
		case a.Name == "-d":
			debug = true
		case a.Name == "-f":
			o.Foreground = true
		case a.Name == "-h":
			o.Help = true
		case a.Name == "-V":
			o.Version = true
		default:
			err = o.applyLong(strings.TrimPrefix(a.Name, "--"), a.Value, strings.Join(a.Tokens, " "))
		}
		if err != nil {
			return nil, err
		}
	}
	for _, a := range o.Args {
		if a.Name != "-o" {
			continue
		}
		for _, item := range strings.Split(a.Value, ",") {
			if err := o.applyCompat(item, strings.Join(a.Tokens, " ")); err != nil {
				return nil, err
			}
		}
	}
	if debug {
		o.LogLevel = "debug"
		o.given["log-level"] = "-d"
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	if id, ok := sandboxIDFromSharedDir(o.SharedDir); ok {
		o.SandboxID = id
	}
	return o, nil
}

func invalid(arg, format string, a ...any) error {
	return fmt.Errorf("invalid argument %q: %s: %w", arg, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
}

// split cuts argv into options, taking values the way clap does.
func (o *Options) split(args []string) error {
	for i := 0; i < len(args); i++ {
		tok := args[i]
		switch {
		case strings.HasPrefix(tok, "--") && len(tok) > 2:
			name, value, hasValue := strings.Cut(tok[2:], "=")
			takes, requireEquals, known := longTakesValue(name)
			if !known {
				return invalid(tok, "not an option of virtiofsd 1.13 nor of kata-virtiofsd (see kata-virtiofsd --help)")
			}
			a := Arg{Name: "--" + name, Tokens: []string{tok}}
			switch {
			case !takes && hasValue:
				return invalid(tok, "--%s takes no value", name)
			case takes && !hasValue && requireEquals:
				return invalid(tok, "--%s needs its value after '=' (--%s=VALUE)", name, name)
			case takes && !hasValue:
				if i+1 >= len(args) || looksLikeOption(args[i+1]) {
					return invalid(tok, "--%s needs a value", name)
				}
				i++
				a.Value = args[i]
				a.Tokens = append(a.Tokens, args[i])
			case takes:
				a.Value = value
			}
			o.Args = append(o.Args, a)
		case strings.HasPrefix(tok, "-") && len(tok) > 1 && tok != "--":
			// A cluster of short options, as clap reads it: -d, -f, -h and -V
			// are flags; -o takes the rest of the token or the next one.
			cluster := tok[1:]
			for j := 0; j < len(cluster); j++ {
				c := cluster[j]
				switch c {
				case 'd', 'f', 'h', 'V':
					o.Args = append(o.Args, Arg{Name: "-" + string(c), Tokens: shortTokens(tok, "-"+string(c))})
				case 'o':
					rest := strings.TrimPrefix(cluster[j+1:], "=")
					a := Arg{Name: "-o"}
					switch {
					case cluster[j+1:] != "":
						a.Value = rest
						if j == 0 {
							a.Tokens = []string{tok}
						} else {
							a.Tokens = []string{"-o", rest}
						}
					case i+1 < len(args) && !looksLikeOption(args[i+1]):
						i++
						a.Value = args[i]
						if j == 0 {
							a.Tokens = []string{tok, args[i]}
						} else {
							a.Tokens = []string{"-o", args[i]}
						}
					default:
						return invalid(tok, "-o needs a value")
					}
					o.Args = append(o.Args, a)
					j = len(cluster)
				default:
					return invalid(tok, "-%c is not an option of virtiofsd 1.13 nor of kata-virtiofsd (see kata-virtiofsd --help)", c)
				}
			}
		default:
			return invalid(tok, "virtiofsd takes no positional arguments")
		}
	}
	return nil
}

// shortTokens keeps a lone short option as given and spells out one taken
// from a cluster.
func shortTokens(tok, canonical string) []string {
	if tok == canonical {
		return []string{tok}
	}
	return []string{canonical}
}

func looksLikeOption(s string) bool {
	return len(s) > 1 && s[0] == '-'
}

// longTakesValue tells whether the long option name takes a value, whether
// that value must follow '=', and whether the option exists at all.
func longTakesValue(name string) (takes, requireEquals, known bool) {
	op := optionsByName[name]
	if op == nil {
		return false, false, false
	}
	return op.kind != noValue, op.kind == valueEqs, true
}

func oneOf(arg, option, value string, allowed ...string) (string, error) {
	for _, a := range allowed {
		if value == a {
			return value, nil
		}
	}
	return "", invalid(arg, "%s must be one of %s", option, strings.Join(allowed, ", "))
}

// parseUint reads an unsigned decimal as Rust's integer parsing does (a
// leading '+' is allowed).
func parseUint(arg, option, value string, bits int) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(value, "+"), 10, bits)
	if err != nil || value == "" || strings.HasPrefix(value, "++") {
		return 0, invalid(arg, "%s must be a non-negative decimal integer", option)
	}
	return n, nil
}

func (o *Options) applyLong(name, value, arg string) error {
	op := optionsByName[name]
	if op == nil {
		// split only lets known names through.
		return invalid(arg, "unknown option")
	}
	o.given[name] = arg
	if op.key != "" {
		o.given[op.key] = arg
	}
	return op.set(o, value, arg)
}

// applyCompat applies one item of a -o list as Rust virtiofsd 1.13 does.
func (o *Options) applyCompat(item, arg string) error {
	key, value, tuple := strings.Cut(item, "=")
	if tuple {
		if strings.Contains(value, "=") {
			return invalid(arg, "-o %s: one '=' per option", item)
		}
		op := optionsByCompat[key]
		if op == nil {
			return invalid(arg, "-o %s is not a compat option of virtiofsd 1.13", item)
		}
		set := op.setCompat
		if set == nil {
			set = op.set
		}
		o.given[op.givenKey()] = "-o " + item
		return set(o, value, arg)
	}
	for _, n := range compatNoEffect {
		if item == n {
			return nil
		}
	}
	name, off := strings.CutPrefix(item, "no_")
	op := optionsByCompatFlag[name]
	if op == nil {
		return invalid(arg, "-o %s is not a compat option of virtiofsd 1.13", item)
	}
	op.setFlag(o, !off)
	// Given under the long option the item stands for; the item itself is
	// kept for messages, as the user wrote it.
	o.given[op.givenKey()] = "-o " + item
	return nil
}

// check applies the requirements and conflicts Rust virtiofsd enforces, so a
// bad command line fails here with one message rather than in the daemon.
func (o *Options) check() error {
	if o.Help || o.Version {
		return nil
	}
	_, fd := o.given["fd"]
	_, group := o.given["socket-group"]
	if fd && o.SocketPath != "" {
		return invalid(o.given["fd"], "--fd cannot be used with --socket-path (%s)", o.given["socket-path"]+o.given["socket"])
	}
	if fd && group {
		return invalid(o.given["socket-group"], "--socket-group cannot be used with --fd")
	}
	if o.PrintCapabilities {
		if group {
			return invalid(o.given["socket-group"], "--socket-group cannot be used with --print-capabilities")
		}
		return nil
	}
	if o.SharedDir == "" {
		if arg, ok := o.given["shared-dir"]; ok {
			return invalid(arg, "the shared directory is empty")
		}
		return fmt.Errorf("missing --shared-dir=DIR: %w", errdefs.ErrInvalidArgument)
	}
	if !fd && o.SocketPath == "" {
		return fmt.Errorf("missing --fd=N or --socket-path=PATH for the vhost-user socket: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// sandboxIDFromSharedDir returns the sandbox id in a Kata shared directory:
// .../sandboxes/<id>/shared, as Kata's Go runtime passes it
// (/run/kata-containers/shared/sandboxes/<id>/shared), or .../sandboxes/<id>/ro,
// as runtime-rs passes it (get_host_ro_shared_path in
// src/runtime-rs/crates/resource/src/share_fs/utils.rs, 4.1.0). A rootless
// Kata puts the same tail under its own runtime dir.
func sandboxIDFromSharedDir(dir string) (string, bool) {
	if dir == "" {
		return "", false
	}
	dir = filepath.Clean(dir)
	if base := filepath.Base(dir); base != "shared" && base != "ro" {
		return "", false
	}
	sandboxDir := filepath.Dir(dir)
	if filepath.Base(filepath.Dir(sandboxDir)) != "sandboxes" {
		return "", false
	}
	id := filepath.Base(sandboxDir)
	if !validSandboxID(id) {
		return "", false
	}
	return id, true
}

// validSandboxID accepts Kata's ids (the rule hooks/plan's store checks): two
// or more letters, digits and . _ -, starting with a letter or digit.
func validSandboxID(id string) bool {
	if len(id) < 2 || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}
