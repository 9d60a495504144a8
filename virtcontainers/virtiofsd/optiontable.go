package virtiofsd

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kata-submount-guard/kata-submount-guard/internal/protection"
)

// The long options of Rust virtiofsd 1.13 and kata-virtiofsd, each once:
// how it is parsed (and its -o compat form), what QEMU's C virtiofsd gets
// for it, and what kata-virtiofsd's own daemon does with it. Parse,
// Translate's cArgs, CheckServe and README's serve-mode table all read
// this table (README: TestREADMEServeOptions).

// valueKind is how a long option takes its value.
type valueKind uint8

const (
	noValue  valueKind = iota // --name
	value                     // --name=V or --name V
	valueEqs                  // --name=V only (clap's require_equals)
)

// option is one long option.
type option struct {
	name string // without "--"
	kind valueKind
	// key is the Given key the option also sets (its positive twin), if
	// any: --no-announce-submounts is how announce-submounts was given.
	key string
	// set applies --name[=value]; arg is the option as given, for errors.
	set func(o *Options, value, arg string) error

	// compat is the -o NAME=VALUE form, setCompat its parser.
	compat    string
	setCompat func(o *Options, value, arg string) error
	// compatFlag is the -o NAME / -o no_NAME form, setFlag its effect.
	compatFlag string
	setFlag    func(o *Options, on bool)

	// toC adds what QEMU's C virtiofsd gets for this option, or refuses it,
	// in cArgs' order (the table's).
	toC func(c *cTarget)
	// rustOnly reports that o uses the option in a way only Rust virtiofsd
	// honours: refused by the C daemon and by our own.
	rustOnly func(o *Options) bool
	// harmless reports that the option as given changes nothing on a
	// daemon other than Rust's (logged, not refused).
	harmless func(o *Options) bool
	// noServe reports that our daemon cannot honour o's use of it.
	noServe func(o *Options) bool
	// serve is README's cell for serve mode: "honoured", "error", ...
	// (TestServeDocMatchesRules holds it to noServe and rustOnly).
	serve string
	// doc is the name README shows when it is not `--name`.
	doc string
}

// shortNoEffect is -f, which Rust virtiofsd 1.13 accepts and ignores.
const shortNoEffect = "-f"

// compatNoEffect are -o items virtiofsd 1.13 accepts and ignores (no such
// locks in Rust; announcing is --no-announce-submounts' alone).
var compatNoEffect = []string{"no_flock", "no_posix_lock", "announce_submounts"}

// flagOpt is a long flag; on is its effect.
func flagOpt(name string, on func(o *Options)) option {
	return option{name: name, set: func(o *Options, _, _ string) error { on(o); return nil }}
}

// withCompatFlag gives op the -o item and its no_ negation.
func (op option) withCompatFlag(item string, set func(o *Options, on bool)) option {
	op.compatFlag, op.setFlag = item, set
	return op
}

// strOpt is a long option whose value is stored as given.
func strOpt(name string, field func(o *Options) *string) option {
	return option{name: name, kind: value, set: func(o *Options, v, _ string) error { *field(o) = v; return nil }}
}

// enumOpt is a long option with a fixed set of values; fold lower-cases the
// value first, as clap's ignore_case does.
func enumOpt(name string, fold bool, store func(o *Options, v string), allowed ...string) option {
	return option{name: name, kind: value, set: func(o *Options, v, arg string) error {
		if fold {
			v = strings.ToLower(v)
		}
		s, err := oneOf(arg, "--"+name, v, allowed...)
		if err == nil {
			store(o, s)
		}
		return err
	}}
}

// mapOpt is a repeatable mapping option.
func mapOpt(name string, field func(o *Options) *[]string) option {
	return option{name: name, kind: value, set: func(o *Options, v, arg string) error {
		if v == "" {
			return invalid(arg, "--%s needs a mapping", name)
		}
		*field(o) = append(*field(o), v)
		return nil
	}, rustOnly: func(o *Options) bool { return len(*field(o)) > 0 }, serve: "error"}
}

// servedAsIs marks an option our daemon honours, with nothing more to say.
func servedAsIs(op option) option { op.serve = "honoured"; return op }

var options = []option{
	servedAsIs(flagOpt("syslog", func(o *Options) { o.Syslog = true }).c(func(c *cTarget) {
		if !c.o.Syslog {
			return
		}
		if c.h.Syslog {
			c.long("--syslog", "", "syslog")
			return
		}
		c.adapted = append(c.adapted, "no syslog daemon answers at "+devLog+": --syslog is not passed to "+c.d.String()+
			", which logs to stderr instead (with --syslog its seccomp filter would kill it at its first message)")
	})),
	servedAsIs(option{name: "fd", kind: value, set: func(o *Options, v, arg string) error {
		n, err := parseUint(arg, "--fd", v, 31)
		o.FD = int(n)
		return err
	}}.c(func(c *cTarget) {
		if c.o.FD >= 0 {
			c.long("--fd", strconv.Itoa(c.o.FD), "fd")
		}
	})),
	servedAsIs(strOpt("socket-path", func(o *Options) *string { return &o.SocketPath }).c(func(c *cTarget) {
		if c.o.FD < 0 && c.o.SocketPath != "" {
			c.long("--socket-path", c.o.SocketPath, "socket-path")
		}
	})),
	servedAsIs(strOpt("socket", func(o *Options) *string { return &o.SocketPath })),
	func() option {
		op := servedAsIs(strOpt("socket-group", func(o *Options) *string { return &o.SocketGroup }).c(func(c *cTarget) {
			if c.o.SocketGroup != "" {
				c.long("--socket-group", c.o.SocketGroup, "socket-group")
			}
		}))
		op.serve, op.doc = "honoured: the socket made at `--socket-path` gets group `G` and mode 0660", "--socket-group=G"
		return op
	}(),
	func() option {
		op := servedAsIs(strOpt("shared-dir", func(o *Options) *string { return &o.SharedDir }).c(func(c *cTarget) {
			if c.o.SharedDir != "" {
				c.opt("source", c.o.SharedDir, "shared-dir")
			}
		}))
		op.compat = "source"
		return op
	}(),
	func() option {
		op := servedAsIs(enumOpt("cache", true, func(o *Options, v string) { o.Cache = CacheMode(v) },
			"auto", "always", "never", "metadata").c(func(c *cTarget) {
			switch c.o.Cache {
			case CacheAuto, CacheAlways:
				c.opt("cache", string(c.o.Cache), "cache")
			case CacheNever:
				c.opt("cache", "none", "cache")
			default:
				c.r.add("cache")
			}
		}))
		op.compat, op.setCompat = "cache", func(o *Options, v, arg string) error {
			s, err := oneOf(arg, "-o cache", v, "auto", "always", "none", "metadata")
			if s == "none" {
				s = string(CacheNever)
			}
			o.Cache = CacheMode(s)
			return err
		}
		op.doc = "--cache=auto|always|never|metadata"
		return op
	}(),
	servedAsIs(option{name: "thread-pool-size", kind: value, set: func(o *Options, v, arg string) error {
		n, err := parseUint(arg, "--thread-pool-size", v, 31)
		o.ThreadPoolSize = int(n)
		return err
	}}.c(func(c *cTarget) {
		c.long("--thread-pool-size", strconv.Itoa(c.o.ThreadPoolSize), "thread-pool-size")
	})),
	func() option {
		op := enumOpt("log-level", true, func(o *Options, v string) { o.LogLevel = v },
			"error", "warn", "info", "debug", "trace", "off").c(func(c *cTarget) {
			if _, ok := c.o.Given("log-level"); ok {
				level := map[string]string{"error": "err", "warn": "warn", "info": "info", "debug": "debug", "trace": "debug", "off": "err"}[c.o.LogLevel]
				c.opt("log_level", level, "log-level")
			}
		})
		op.compat, op.setCompat = "loglevel", func(o *Options, v, arg string) error {
			s, err := oneOf(arg, "-o loglevel", v, "debug", "info", "warn", "err")
			if s == "err" {
				s = "error"
			}
			o.LogLevel = s
			return err
		}
		op.serve = "honoured, for kata-virtiofsd's own messages too, also as `-d` (`off` silences the log, but a failure still reaches stderr)"
		return op
	}(),
	func() option {
		op := servedAsIs(enumOpt("sandbox", true, func(o *Options, v string) { o.Sandbox = SandboxMode(v) },
			"namespace", "chroot", "none").c(func(c *cTarget) {
			if _, ok := c.o.Given("sandbox"); !ok {
				return
			}
			if c.o.Sandbox == SandboxNone {
				c.r.add("sandbox")
			} else {
				c.opt("sandbox", string(c.o.Sandbox), "sandbox")
			}
		}))
		op.compat, op.setCompat = "sandbox", func(o *Options, v, arg string) error {
			s, err := oneOf(arg, "-o sandbox", v, "namespace", "chroot")
			o.Sandbox = SandboxMode(s)
			return err
		}
		op.doc = "--sandbox=namespace|chroot|none"
		return op
	}(),
	func() option {
		op := enumOpt("seccomp", false, func(o *Options, v string) { o.Seccomp = v }, "none", "kill", "log", "trap").c(func(c *cTarget) {
			if c.o.Seccomp != "kill" {
				c.r.add("seccomp")
			}
		})
		op.serve = "honoured in the namespace and chroot sandboxes; `kill` is the default, as in Rust. With `--sandbox=none` " +
			"an explicit `kill`, `log` or `trap` is an error (see **Seccomp** below)"
		op.doc = "--seccomp=kill|log|trap|none"
		return op
	}(),
	servedAsIs(flagOpt("xattr", func(o *Options) { o.Xattr = true }).withCompatFlag("xattr", func(o *Options, on bool) { o.Xattr = on }).c(func(c *cTarget) {
		if c.o.XattrEnabled() {
			c.opt("xattr", "", "xattr")
		}
	})),
	refusedByServe(flagOpt("posix-acl", func(o *Options) { o.PosixACL = true }).withCompatFlag("posix_acl", func(o *Options, on bool) { o.PosixACL = on }).c(func(c *cTarget) {
		if c.o.PosixACL {
			c.opt("posix_acl", "", "posix-acl")
		}
	}), func(o *Options) bool { return o.PosixACL }),
	refusedByServe(flagOpt("security-label", func(o *Options) { o.SecurityLabel = true }).withCompatFlag("security_label", func(o *Options, on bool) { o.SecurityLabel = on }).c(func(c *cTarget) {
		if c.o.SecurityLabel {
			c.opt("security_label", "", "security-label")
		}
	}), func(o *Options) bool { return o.SecurityLabel }),
	func() option {
		op := refusedByServe(option{name: "xattrmap", kind: value, set: func(o *Options, v, arg string) error {
			if v == "" {
				return invalid(arg, "--xattrmap needs rules, e.g. :map::user.virtiofs.:")
			}
			o.XattrMap = v
			return nil
		}}.c(func(c *cTarget) {
			if c.o.XattrMap != "" {
				c.opt("xattrmap", c.o.XattrMap, "xattrmap")
			}
		}), func(o *Options) bool { return o.XattrMap != "" })
		op.compat, op.setCompat = "xattrmap", func(o *Options, v, arg string) error {
			if v == "" {
				return invalid(arg, "-o xattrmap needs rules")
			}
			o.XattrMap = v
			return nil
		}
		return op
	}(),
	servedAsIs(flagOpt("announce-submounts", func(o *Options) { o.AnnounceSubmounts = true }).c(func(c *cTarget) {
		if c.o.AnnounceSubmounts && c.p != protection.NoSubmounts {
			c.opt("announce_submounts", "", "announce-submounts")
		}
	})),
	func() option {
		op := servedAsIs(flagOpt("no-announce-submounts", func(o *Options) { o.AnnounceSubmounts = false }))
		op.key = "announce-submounts"
		return op
	}(),
	servedAsIs(flagOpt("no-readdirplus", func(o *Options) { o.NoReaddirplus = true }).withCompatFlag("readdirplus", func(o *Options, on bool) { o.NoReaddirplus = !on }).c(func(c *cTarget) {
		if c.o.Cache != CacheNever && c.o.NoReaddirplus {
			c.opt("no_readdirplus", "", "no-readdirplus")
		}
	})),
	refusedByServe(flagOpt("writeback", func(o *Options) { o.Writeback = true }).withCompatFlag("writeback", func(o *Options, on bool) { o.Writeback = on }).c(func(c *cTarget) {
		if c.o.Writeback {
			c.opt("writeback", "", "writeback")
		}
	}), func(o *Options) bool { return o.Writeback }),
	servedAsIs(flagOpt("allow-direct-io", func(o *Options) { o.AllowDirectIO = true }).withCompatFlag("allow_direct_io", func(o *Options, on bool) { o.AllowDirectIO = on }).c(func(c *cTarget) {
		if c.o.AllowDirectIO {
			c.opt("allow_direct_io", "", "allow-direct-io")
		}
	})),
	// Rust's default is no killpriv_v2; the C daemon's is to use it when
	// the guest offers it. A C daemon without the option never uses it.
	refusedByServe(flagOpt("killpriv-v2", func(o *Options) { o.KillprivV2 = true }).withCompatFlag("killpriv_v2", func(o *Options, on bool) { o.KillprivV2 = on }).c(func(c *cTarget) {
		switch {
		case c.o.KillprivV2:
			c.opt("killpriv_v2", "", "killpriv-v2")
		case c.d.Supports("no_killpriv_v2"):
			c.opt("no_killpriv_v2", "", "killpriv-v2")
		}
	}), func(o *Options) bool { return o.KillprivV2 }),
	func() option {
		op := flagOpt("no-killpriv-v2", func(o *Options) { o.KillprivV2 = false })
		op.key, op.serve = "killpriv-v2", "honoured: the only mode our daemon has"
		return op
	}(),
	func() option {
		op := refusedByServe(strOpt("modcaps", func(o *Options) *string { return &o.Modcaps }).c(func(c *cTarget) {
			if c.o.Modcaps != "" {
				c.opt("modcaps", c.o.Modcaps, "modcaps")
			}
		}), func(o *Options) bool { return o.Modcaps != "" })
		op.compat = "modcaps"
		return op
	}(),
	func() option {
		op := option{name: "rlimit-nofile", kind: value, set: func(o *Options, v, arg string) error {
			n, err := parseUint(arg, "--rlimit-nofile", v, 64)
			o.RlimitNofile = &n
			return err
		}}.c(func(c *cTarget) {
			if c.o.RlimitNofile != nil {
				c.long("--rlimit-nofile", strconv.FormatUint(*c.o.RlimitNofile, 10), "rlimit-nofile")
			}
		})
		op.serve = "honoured: both limits are set to `N`; `0` leaves them alone. Raising the hard limit needs `CAP_SYS_RESOURCE`. " +
			"Without it, an explicit `N` is an error that says so. The default (raise toward 1,000,000, as Rust does) falls back " +
			"to the hard limit with a message."
		op.doc = "--rlimit-nofile=N"
		return op
	}(),
	func() option {
		op := flagOpt("print-capabilities", func(o *Options) { o.PrintCapabilities = true }).c(func(c *cTarget) {
			if c.o.PrintCapabilities {
				c.long("--print-capabilities", "", "print-capabilities")
			}
		})
		op.serve = "honoured: prints `{\"type\": \"fs\"}` (no migration features)"
		return op
	}(),
	func() option {
		op := flagOpt("readonly", func(o *Options) { o.ReadOnly = true }).c(func(c *cTarget) {
			if c.o.ReadOnly {
				c.r.add("readonly")
			}
		})
		op.serve = "honoured: every request that would change the share gets `EROFS`, as does an open for writing or with " +
			"`O_TRUNC`. `O_CREAT` opens an existing file for reading. (The guest checks `access(2)` itself, so " +
			"`access(W_OK)` can say yes before the write fails.)"
		return op
	}(),
	func() option {
		op := flagOpt("allow-mmap", func(o *Options) { o.AllowMmap = true }).c(func(c *cTarget) {
			if c.o.AllowMmap && (c.o.Cache == CacheNever || c.o.Cache == CacheMetadata) {
				c.r.add("allow-mmap")
			}
		})
		op.serve = "honoured: `FUSE_DIRECT_IO_ALLOW_MMAP` is offered, and guest kernels 6.6 and later then allow shared " +
			"mappings with `--cache=never|metadata`"
		return op
	}(),
	func() option {
		op := flagOpt("preserve-noatime", func(o *Options) { o.PreserveNoatime = true }).c(func(c *cTarget) {
			if c.o.PreserveNoatime {
				c.r.add("preserve-noatime")
			}
		})
		op.serve = "honoured: the guest's `O_NOATIME` reaches the host"
		return op
	}(),

	// Only Rust virtiofsd honours these (beyond their defaults): a tag in
	// the vhost-user config space, file handles without an O_PATH
	// fallback, UID/GID mapping and translation, migration.
	onlyRust(option{name: "tag", kind: value, set: func(o *Options, v, arg string) error {
		if v == "" || len(v) > 36 {
			return invalid(arg, "the tag must be 1 to 36 bytes long")
		}
		o.Tag = v
		return nil
	}}, func(o *Options) bool { return o.Tag != "" }),
	// Both other daemons always hold O_PATH descriptors, which prefer and
	// fallback fall back to: only the number of open descriptors differs.
	func() option {
		op := onlyRust(enumOpt("inode-file-handles", false, func(o *Options, v string) { o.InodeFileHandles = v },
			"never", "prefer", "fallback", "mandatory"), func(o *Options) bool { return o.InodeFileHandles == "mandatory" })
		op.kind = valueEqs
		op.harmless = func(o *Options) bool { return o.InodeFileHandles == "prefer" || o.InodeFileHandles == "fallback" }
		op.serve = "`never`: honoured, the only mode our daemon has; `prefer`, `fallback`: harmless, logged: our daemon " +
			"always holds `O_PATH` descriptors, which is what these fall back to (only the number of open descriptors " +
			"differs); `mandatory`: error"
		op.doc = "--inode-file-handles=never|prefer|fallback|mandatory"
		return op
	}(),
	mapOpt("uid-map", func(o *Options) *[]string { return &o.UIDMap }),
	mapOpt("gid-map", func(o *Options) *[]string { return &o.GIDMap }),
	mapOpt("translate-uid", func(o *Options) *[]string { return &o.TranslateUID }),
	mapOpt("translate-gid", func(o *Options) *[]string { return &o.TranslateGID }),
	// Neither other daemon offers migration, so QEMU never migrates the
	// device and the defaults are never consulted there.
	migrationDefault(enumOpt("migration-mode", false, func(o *Options, v string) { o.MigrationMode = v }, "find-paths", "file-handles"),
		func(o *Options) string { return o.MigrationMode }, "find-paths"),
	migrationDefault(enumOpt("migration-on-error", false, func(o *Options, v string) { o.MigrationOnError = v }, "abort", "guest-error"),
		func(o *Options) string { return o.MigrationOnError }, "abort"),
	onlyRust(flagOpt("migration-verify-handles", func(o *Options) { o.MigrationVerifyHandles = true }),
		func(o *Options) bool { return o.MigrationVerifyHandles }),
	onlyRust(flagOpt("migration-confirm-paths", func(o *Options) { o.MigrationConfirmPaths = true }),
		func(o *Options) bool { return o.MigrationConfirmPaths }),

	// kata-virtiofsd answers these itself; README's serve table has no
	// row for them (no serve), nor for the --guard-* options, which are
	// kata-virtiofsd's own and never passed on (see rustArgs).
	flagOpt("help", func(o *Options) { o.Help = true }),
	flagOpt("version", func(o *Options) { o.Version = true }),
	enumOpt("guard-protection", false, func(o *Options, v string) { o.Guard.Protection = protection.Protection(v) },
		string(protection.Recover), string(protection.NoSubmounts), string(protection.None)),
	option{name: "guard-upstream", kind: value, set: func(o *Options, v, arg string) error {
		if !filepath.IsAbs(v) {
			return invalid(arg, "--guard-upstream needs the absolute path of a virtiofsd binary")
		}
		o.Guard.Upstream = filepath.Clean(v)
		return nil
	}},
	option{name: "guard-state-dir", kind: value, set: func(o *Options, v, arg string) error {
		if !filepath.IsAbs(v) {
			return invalid(arg, "--guard-state-dir needs an absolute directory")
		}
		o.Guard.StateDir = filepath.Clean(v)
		return nil
	}},
	enumOpt("guard-no-plan", false, func(o *Options, v string) { o.Guard.NoPlan = v },
		string(protection.None), string(protection.NoSubmounts), string(protection.Recover), NoPlanFail),
}

// c sets the option's C translation.
func (op option) c(toC func(c *cTarget)) option { op.toC = toC; return op }

// refusedByServe marks an option our daemon cannot honour when used.
func refusedByServe(op option, used func(o *Options) bool) option {
	op.noServe, op.serve = used, "error"
	return op
}

// onlyRust marks an option only Rust virtiofsd honours when used.
func onlyRust(op option, used func(o *Options) bool) option {
	op.rustOnly = used
	if op.serve == "" {
		op.serve = "error"
	}
	return op
}

// migrationDefault is a migration option harmless at its default and
// Rust-only otherwise.
func migrationDefault(op option, field func(o *Options) string, def string) option {
	op = onlyRust(op, func(o *Options) bool { v := field(o); return v != "" && v != def })
	op.harmless = func(o *Options) bool { return field(o) == def }
	op.serve = "`" + def + "` (the default): harmless, logged: our daemon offers no migration, so QEMU never migrates the device; other values: error"
	return op
}

// optionsByName, optionsByCompat and optionsByCompatFlag index the table
// by long name, -o NAME=VALUE and -o [no_]NAME.
var optionsByName, optionsByCompat, optionsByCompatFlag = func() (byName, byCompat, byFlag map[string]*option) {
	byName, byCompat, byFlag = map[string]*option{}, map[string]*option{}, map[string]*option{}
	for i := range options {
		op := &options[i]
		byName[op.name] = op
		if op.compat != "" {
			byCompat[op.compat] = op
		}
		if op.compatFlag != "" {
			byFlag[op.compatFlag] = op
		}
	}
	return byName, byCompat, byFlag
}()

// givenKey is the Given key an option sets.
func (op *option) givenKey() string {
	if op.key != "" {
		return op.key
	}
	return op.name
}
