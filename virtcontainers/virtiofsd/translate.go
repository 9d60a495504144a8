package virtiofsd

import (
	"fmt"
	"strconv"
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

// refuseRustOnly adds what only the Rust virtiofsd does: a virtio-fs tag in
// the vhost-user config space, file handles without an O_PATH fallback, UID/GID
// mapping and translation, and migration other than its default (neither
// other daemon migrates at all, so the defaults are harmless there; see
// harmlessElsewhere).
func refuseRustOnly(o *Options, r *refusals) {
	if o.Tag != "" {
		r.add("tag")
	}
	if o.InodeFileHandles == "mandatory" {
		r.add("inode-file-handles")
	}
	for _, k := range []struct {
		key string
		n   int
	}{{"uid-map", len(o.UIDMap)}, {"gid-map", len(o.GIDMap)}, {"translate-uid", len(o.TranslateUID)}, {"translate-gid", len(o.TranslateGID)}} {
		if k.n > 0 {
			r.add(k.key)
		}
	}
	if o.MigrationMode != "" && o.MigrationMode != "find-paths" {
		r.add("migration-mode")
	}
	if o.MigrationOnError != "" && o.MigrationOnError != "abort" {
		r.add("migration-on-error")
	}
	if o.MigrationVerifyHandles {
		r.add("migration-verify-handles")
	}
	if o.MigrationConfirmPaths {
		r.add("migration-confirm-paths")
	}
}

// harmlessElsewhere returns the options given that change nothing on a
// daemon other than Rust's, as given: --inode-file-handles=prefer|fallback
// (both other daemons always hold O_PATH descriptors, which these fall back
// to: only the number of open descriptors differs) and the migration options
// at their defaults (neither other daemon offers migration, so QEMU never
// migrates the device and these are never consulted).
func harmlessElsewhere(o *Options) []string {
	var out []string
	if arg, ok := o.Given("inode-file-handles"); ok && (o.InodeFileHandles == "prefer" || o.InodeFileHandles == "fallback") {
		out = append(out, arg)
	}
	if arg, ok := o.Given("migration-mode"); ok && o.MigrationMode == "find-paths" {
		out = append(out, arg)
	}
	if arg, ok := o.Given("migration-on-error"); ok && o.MigrationOnError == "abort" {
		out = append(out, arg)
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

// cArgs spells o for QEMU's C virtiofsd. Harmless on the C daemon, hence
// dropped: -f (it runs in the foreground anyway), --seccomp=kill (its fixed
// behaviour), --allow-mmap with --cache=auto|always (Rust ignores it there),
// -o no_flock / -o no_posix_lock (its defaults) and harmlessElsewhere's. Log
// levels map to the nearest: trace → debug, off → err. --syslog is dropped
// when h says no syslog daemon answers (see Translate).
func cArgs(o *Options, d Daemon, p protection.Protection, h Host) (out, adapted []string, err error) {
	r := &refusals{o: o}
	// opt adds "-o item" when the daemon lists the option name; key names
	// the Rust option that asked for it, for the error otherwise.
	opt := func(name, value, key string) {
		if !d.Supports(name) {
			r.add(key)
			return
		}
		if value == "" {
			out = append(out, "-o", name)
			return
		}
		out = append(out, "-o", name+"="+escapeFuseOpt(value))
	}
	long := func(name, value, key string) {
		if !d.Supports(name) {
			r.add(key)
			return
		}
		if value == "" {
			out = append(out, name)
			return
		}
		out = append(out, name+"="+value)
	}

	if o.Syslog {
		if h.Syslog {
			long("--syslog", "", "syslog")
		} else {
			adapted = append(adapted, "no syslog daemon answers at "+DevLog+": --syslog is not passed to "+d.String()+
				", which logs to stderr instead (with --syslog its seccomp filter would kill it at its first message)")
		}
	}
	switch {
	case o.FD >= 0:
		long("--fd", strconv.Itoa(o.FD), "fd")
	case o.SocketPath != "":
		long("--socket-path", o.SocketPath, "socket-path")
	}
	if o.SocketGroup != "" {
		long("--socket-group", o.SocketGroup, "socket-group")
	}
	if o.SharedDir != "" {
		opt("source", o.SharedDir, "shared-dir")
	}
	switch o.Cache {
	case CacheAuto, CacheAlways:
		opt("cache", string(o.Cache), "cache")
	case CacheNever:
		opt("cache", "none", "cache")
	default:
		r.add("cache")
	}
	long("--thread-pool-size", strconv.Itoa(o.ThreadPoolSize), "thread-pool-size")
	if _, ok := o.Given("log-level"); ok {
		level := map[string]string{"error": "err", "warn": "warn", "info": "info", "debug": "debug", "trace": "debug", "off": "err"}[o.LogLevel]
		opt("log_level", level, "log-level")
	}
	if _, ok := o.Given("sandbox"); ok {
		if o.Sandbox == SandboxNone {
			r.add("sandbox")
		} else {
			opt("sandbox", string(o.Sandbox), "sandbox")
		}
	}
	if o.Seccomp != "kill" {
		r.add("seccomp")
	}
	if o.XattrEnabled() {
		opt("xattr", "", "xattr")
	}
	if o.PosixACL {
		opt("posix_acl", "", "posix-acl")
	}
	if o.SecurityLabel {
		opt("security_label", "", "security-label")
	}
	if o.XattrMap != "" {
		opt("xattrmap", o.XattrMap, "xattrmap")
	}
	if o.AnnounceSubmounts && p != protection.NoSubmounts {
		opt("announce_submounts", "", "announce-submounts")
	}
	if o.Cache != CacheNever && o.NoReaddirplus {
		opt("no_readdirplus", "", "no-readdirplus")
	}
	if o.Writeback {
		opt("writeback", "", "writeback")
	}
	if o.AllowDirectIO {
		opt("allow_direct_io", "", "allow-direct-io")
	}
	// Rust's default is no killpriv_v2; the C daemon's is to use it when the
	// guest offers it. A C daemon without the option never uses it.
	switch {
	case o.KillprivV2:
		opt("killpriv_v2", "", "killpriv-v2")
	case d.Supports("no_killpriv_v2"):
		opt("no_killpriv_v2", "", "killpriv-v2")
	}
	if o.Modcaps != "" {
		opt("modcaps", o.Modcaps, "modcaps")
	}
	if o.RlimitNofile != nil {
		long("--rlimit-nofile", strconv.FormatUint(*o.RlimitNofile, 10), "rlimit-nofile")
	}
	if o.PrintCapabilities {
		long("--print-capabilities", "", "print-capabilities")
	}

	if o.ReadOnly {
		r.add("readonly")
	}
	if o.AllowMmap && (o.Cache == CacheNever || o.Cache == CacheMetadata) {
		r.add("allow-mmap")
	}
	if o.PreserveNoatime {
		r.add("preserve-noatime")
	}
	refuseRustOnly(o, r)

	if len(r.names) > 0 {
		return nil, nil, fmt.Errorf("%s cannot honour %s: remove %s from Kata's virtio_fs_cache/virtio_fs_extra_args, "+
			"or point --guard-upstream at the Rust virtiofsd: %w", d, r, r.them(), errdefs.ErrNotImplemented)
	}
	return out, adapted, nil
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
