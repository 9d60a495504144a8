package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/plan"
	"github.com/kata-submount-guard/kata-submount-guard/hooks/policy"
	"github.com/kata-submount-guard/kata-submount-guard/shim/delegate"
)

// ErrorPrefix starts every line the shim prints; containerd shows it after
// "failed to start shim: start failed: ".
const ErrorPrefix = "kata-submount-guard: "

// maxRuntimeOptions caps what start reads from stdin; containerd's runtime
// options are a few hundred bytes.
const maxRuntimeOptions = 4 << 20

// ttrpcAddressEnv is where containerd's ttrpc (events) service listens.
const ttrpcAddressEnv = "TTRPC_ADDRESS"

// Shim is one run of containerd-shim-kata-v2.
type Shim struct {
	// Args is the whole argv (argv[0] included) and Env the environment, as
	// the process received them; the delegate gets exactly these.
	Args []string
	Env  []string
	// Stdin carries containerd's runtime options at start.
	Stdin *os.File
	// Stderr receives the one line explaining a refusal or an error.
	Stderr io.Writer
	// Exec replaces the process with the delegate; nil means execve(2).
	Exec func(path string, argv, env []string) error
	// Inspector inspects guest kernels; nil means the inspection cache and,
	// on a miss, kata-runtime beside this executable.
	Inspector policy.Inspector
	// Identify tells which Kata shim a [submount_guard] table's
	// delegate_shim is; nil means delegate.IdentifyGuard.
	Identify delegate.Identifier
	// DefaultConfigPaths replaces config.DefaultConfigPaths() and
	// config.RuntimeRSDefaultConfigPaths() when not nil, and
	// DefaultDelegate config.DefaultDelegateShim when not "" (tests).
	DefaultConfigPaths []string
	DefaultDelegate    string
	// NewLogger builds the logger of one invocation: debug is -debug,
	// fifoPath the bundle's log FIFO ("" when there is none to write to).
	// close releases its sinks. nil means the logger in Run's context.
	NewLogger func(debug bool, fifoPath string) (logger *log.Entry, close func())
}

// bundleLogFIFO is the FIFO containerd creates in the bundle and copies into
// its own log.
const bundleLogFIFO = "log"

// resolve finds Kata's configuration as the delegate that will load it
// does (package delegate).
func (s *Shim) resolve(ctx context.Context, src config.Sources) (*config.Resolved, error) {
	src.Getenv = s.getenv
	if s.DefaultConfigPaths != nil {
		src.DefaultPaths, src.RuntimeRSDefaultPaths = s.DefaultConfigPaths, s.DefaultConfigPaths
	}
	identify := s.Identify
	if identify == nil {
		identify = delegate.IdentifyGuard
	}
	res, id, err := delegate.Resolve(ctx, src, identify)
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(log.Fields{"delegate": res.Guard.DelegateShim, "delegate_kind": id.Kind, "delegate_version": id.Version, "config": res.Path}).
		Debug("configuration resolved as the delegate does")
	return res, nil
}

// Run does what the invocation asks and returns the exit code when it did
// not hand off (a hand-off never returns).
func (s *Shim) Run(ctx context.Context) int {
	inv := parseArgs(s.Args)
	cwd, _ := os.Getwd()
	fifo := ""
	if inv.checks() {
		fifo = filepath.Join(cwd, bundleLogFIFO)
	}
	logger, closeLog := log.G(ctx), func() {}
	if s.NewLogger != nil {
		logger, closeLog = s.NewLogger(inv.debug, fifo)
	}
	defer closeLog()
	ctx = log.WithLogger(ctx, logger.WithField("sandbox", inv.id))

	var err error
	switch {
	case inv.uncheckableStart(s.Args):
		err = fmt.Errorf("cannot parse the shim arguments %q (%w), so the guest kernel cannot be checked and the sandbox is not started; upgrade containerd-shim-kata-v2 to match containerd: %w",
			s.Args[1:], inv.parseErr, errdefs.ErrInvalidArgument)
	case inv.checks():
		err = s.start(ctx, inv, cwd)
	case inv.parseErr == nil && !inv.version && !inv.info && inv.action == "delete":
		err = s.delete(ctx, inv, cwd)
	default:
		err = s.handOffAtOnce(ctx, inv, cwd)
	}
	var r *refusal
	if !errors.As(err, &r) {
		log.G(ctx).WithError(err).WithField("action", inv.action).Error("containerd-shim-kata-v2 cannot hand off to the delegate shim")
	}
	s.printError(err)
	return 1
}

// refusal is a start the policy refused.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

// printError writes err as one line. Without a trailing newline when
// containerd reads it, like containerd's own shims: it quotes the output as
// "start failed: <output>: exit status 1".
func (s *Shim) printError(err error) {
	line := ErrorPrefix + strings.Join(strings.Fields(err.Error()), " ")
	if f, ok := s.Stderr.(*os.File); ok && isTerminal(f) {
		line += "\n"
	}
	_, _ = io.WriteString(s.Stderr, line)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (s *Shim) getenv(key string) string {
	v := ""
	prefix := key + "="
	for _, kv := range s.Env {
		if strings.HasPrefix(kv, prefix) {
			v = kv[len(prefix):]
		}
	}
	return v
}

// start checks a sandbox-creating start and hands off.
func (s *Shim) start(ctx context.Context, inv invocation, bundle string) error {
	if inv.id == "" {
		return fmt.Errorf("start without -id: containerd always names the container; nothing was started: %w", errdefs.ErrInvalidArgument)
	}
	annotations, err := readAnnotations(bundle)
	if err != nil {
		return err
	}
	options, err := io.ReadAll(io.LimitReader(s.Stdin, maxRuntimeOptions+1))
	if err != nil {
		return fmt.Errorf("read runtime options from stdin: %w", err)
	}
	if len(options) > maxRuntimeOptions {
		return fmt.Errorf("runtime options on stdin are larger than %d bytes: %w", maxRuntimeOptions, errdefs.ErrInvalidArgument)
	}
	ctype, sandboxID, err := policy.Classify(annotations, inv.id)
	if err != nil {
		return err
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("sandbox", sandboxID))

	if ctype == policy.PodContainer {
		// The decision was made when the sandbox was created; Kata reads
		// no hypervisor annotation for a joining container either.
		res, err := s.resolve(ctx, config.Sources{Annotations: configPathOnly(annotations), RuntimeOptions: DecodeRuntimeOptions(options)})
		if err != nil {
			return err
		}
		return s.handOff(ctx, inv.namespace, bundle, inv.id, sandboxID, res, options, nil)
	}

	res, err := s.resolve(ctx, config.Sources{Annotations: annotations, RuntimeOptions: DecodeRuntimeOptions(options)})
	if err != nil {
		return err
	}
	insp := s.Inspector
	if insp == nil {
		insp = kernelInspector{}
	}
	pl, err := policy.Decide(ctx, policy.Input{Resolved: res, Annotations: annotations, SandboxID: sandboxID, ContainerType: ctype, Inspector: insp})
	if err != nil {
		return err
	}
	entry := log.G(ctx).WithFields(planFields(pl))
	switch pl.Action {
	case plan.Refuse:
		entry.Error("sandbox creation refused: guest kernel and [submount_guard] policy")
		return &refusal{reason: pl.Reason}
	case plan.Warn:
		// The containerd event goes out only once the start is sure to
		// hand off (handOff): a "sandbox starts" event must not announce a
		// start that then fails.
		if pl.Unprotected {
			entry.Warn("guest kernel may lose virtio-fs submounts (Linux c4d361f66ac9 missing or unproven); sandbox starts UNPROTECTED: " + pl.UnprotectedReason)
		} else {
			entry.Warn("guest kernel may lose virtio-fs submounts (Linux c4d361f66ac9 missing or unproven); sandbox starts with protection " + string(pl.Protection))
		}
	default:
		entry.Debug("guest kernel check passed")
	}
	// A start that cannot hand off must not leave a plan behind.
	if err := checkDelegate(res.Guard.DelegateShim, res.Path); err != nil {
		return err
	}
	if err := plan.Write(res.Guard.StateDir, pl); err != nil {
		return fmt.Errorf("cannot store the plan of sandbox %s in [submount_guard] state_dir = %q (%s): %w; make that directory writable by root or set state_dir to one that is",
			sandboxID, res.Guard.StateDir, res.Path, err)
	}
	return s.handOff(ctx, inv.namespace, bundle, inv.id, sandboxID, res, options, pl)
}

// handOff leaves the note for delete and execs the delegate with stdin fed
// back. pl is the sandbox's plan start wrote (nil for a joining
// container); a warning plan is published to containerd right before the
// exec, when nothing else can fail the start. If the exec fails, what start
// wrote is removed again.
func (s *Shim) handOff(ctx context.Context, namespace, bundle, id, sandboxID string, res *config.Resolved, options []byte, pl *plan.Plan) error {
	g := res.Guard
	undo := func() {
		if pl != nil {
			_ = plan.Remove(g.StateDir, sandboxID)
		}
		removeNote(bundle)
	}
	if err := checkDelegate(g.DelegateShim, res.Path); err != nil {
		undo()
		return err
	}
	note := handoffNote{ID: id, SandboxID: sandboxID, ConfigPath: res.Path, DelegateShim: g.DelegateShim, StateDir: g.StateDir}
	if err := writeNote(bundle, note); err != nil {
		undo()
		return fmt.Errorf("cannot write to the bundle: %w", err)
	}
	if err := feedStdin(options); err != nil {
		undo()
		return err
	}
	if pl != nil && pl.Action == plan.Warn {
		if err := publishWarning(ctx, s.getenv(ttrpcAddressEnv), namespace, pl); err != nil {
			log.G(ctx).WithError(err).Error("containerd event not published")
		}
	}
	err := s.exec(g.DelegateShim)
	undo()
	return err
}

func (s *Shim) exec(path string) error {
	if s.Exec != nil {
		return s.Exec(path, s.Args, s.Env)
	}
	return execve(path, s.Args, s.Env)
}

// delete removes the plan of a sandbox being deleted and hands off. The
// note start left in the bundle names the delegate and state directory; a
// bundle without one (gone, or started by another build) falls back to the
// configuration its annotations and the environment select.
func (s *Shim) delete(ctx context.Context, inv invocation, cwd string) error {
	bundle := inv.bundle
	if bundle == "" {
		bundle = cwd
	}
	delegate, configPath, stateDir := "", "", ""
	if note, err := readNote(bundle); err == nil {
		delegate, configPath, stateDir = note.DelegateShim, note.ConfigPath, note.StateDir
	} else {
		res, err := s.resolveForHandOff(ctx, bundle)
		if err != nil {
			return err
		}
		delegate, configPath, stateDir = res.Guard.DelegateShim, res.Path, res.Guard.StateDir
	}
	// A plan is named by its sandbox's id, so removing <id>.json only ever
	// removes this sandbox's plan; a container that joined has none. The
	// sandbox goes away whatever the delegate says, so its plan goes first.
	if inv.id != "" {
		if err := plan.Remove(stateDir, inv.id); err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			log.G(ctx).WithError(err).Error("plan not removed")
			// containerd logs a delete's stderr as cleanup warnings.
			fmt.Fprintf(s.Stderr, "%splan of %s not removed: %v\n", ErrorPrefix, inv.id, err)
		}
	}
	if err := checkDelegate(delegate, configPath); err != nil {
		return err
	}
	return s.exec(delegate)
}

// handOffAtOnce serves -v, -info and anything we do not know: find the
// delegate and exec it, stdin untouched. -v and -info ask about the shim,
// not a sandbox, and Kata's shim answers them without a configuration: where
// no configuration file is found they go to the default delegate_shim.
func (s *Shim) handOffAtOnce(ctx context.Context, inv invocation, cwd string) error {
	bundle := inv.bundle
	if bundle == "" {
		bundle = cwd
	}
	delegate, configPath := "", ""
	res, err := s.resolveForHandOff(ctx, bundle)
	switch {
	case err == nil:
		delegate, configPath = res.Guard.DelegateShim, res.Path
	case inv.parseErr == nil && (inv.version || inv.info) && errors.Is(err, errdefs.ErrNotFound):
		delegate = s.DefaultDelegate
		if delegate == "" {
			delegate = config.DefaultDelegateShim
		}
		log.G(ctx).WithError(err).WithField("delegate", delegate).Debug("no Kata configuration file; -v/-info go to the default delegate_shim")
	default:
		return err
	}
	if err := checkDelegate(delegate, configPath); err != nil {
		return err
	}
	return s.exec(delegate)
}

// resolveForHandOff finds the configuration from what is at hand without
// stdin: the bundle's config_path annotation if there is a bundle, the
// environment, the default paths.
func (s *Shim) resolveForHandOff(ctx context.Context, bundle string) (*config.Resolved, error) {
	annotations, err := readAnnotations(bundle)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	res, err := s.resolve(ctx, config.Sources{Annotations: configPathOnly(annotations)})
	if err != nil {
		return nil, fmt.Errorf("cannot find the delegate shim: %w", err)
	}
	return res, nil
}

// configPathOnly keeps the annotation that chooses the file and drops the
// hypervisor overrides, which only sandbox creation applies.
func configPathOnly(annotations map[string]string) map[string]string {
	if p, ok := annotations[config.AnnotationConfigPath]; ok {
		return map[string]string{config.AnnotationConfigPath: p}
	}
	return nil
}

func planFields(p *plan.Plan) log.Fields {
	return log.Fields{
		"kernel":      p.Kernel.Path,
		"version":     p.Kernel.Version,
		"verdict":     p.Kernel.Verdict,
		"evidence":    p.Kernel.Evidence,
		"action":      p.Action,
		"reason":      p.Reason,
		"config":      p.ConfigPath,
		"delegate":    p.DelegateKind,
		"protection":  p.Protection,
		"unprotected": p.Unprotected,
	}
}
