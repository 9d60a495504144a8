package delegate

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/kata-submount-guard/kata-submount-guard/config"
	"github.com/kata-submount-guard/kata-submount-guard/internal/statedir"
)

// Identifier tells the kind of the delegate a [submount_guard] table names.
type Identifier func(ctx context.Context, guard config.Guard) (Identity, error)

// IdentifyGuard is the Identifier of production: the pinned delegate_kind,
// else identifyBinary with the cache under state_dir.
func IdentifyGuard(ctx context.Context, guard config.Guard) (Identity, error) {
	if guard.DelegateKind != "" && guard.DelegateKind != config.DelegateAuto {
		return Identity{Kind: guard.DelegateKind, Line: "pinned by [submount_guard] delegate_kind"}, nil
	}
	return identifyBinary(ctx, guard.DelegateShim, statedir.DelegateCacheDir(guard.StateDir))
}

// Resolve resolves Kata's configuration as the delegate that will load it
// does. The delegate is named in a file the operator chose (runtime option,
// KATA_CONF_FILE, --config or a default path; never a pod annotation):
// that delegate's kind then chooses, by its own rules, the file that is
// judged. If that file names a delegate of another kind, the shim that
// would run and the file it would load disagree, and Resolve refuses
// rather than judge either.
func Resolve(ctx context.Context, src config.Sources, identify Identifier) (*config.Resolved, Identity, error) {
	operatorPath, err := config.OperatorPath(src)
	if err != nil {
		return nil, Identity{}, err
	}
	operatorFile, err := config.Load(operatorPath)
	if err != nil {
		return nil, Identity{}, err
	}
	id, err := identify(ctx, operatorFile.Guard)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("%s: %w", operatorPath, err)
	}
	src.Delegate, src.DelegateVersion = id.Kind, id.Version
	// Most often the delegate's rules choose the operator's file: read once.
	src.Loaded = operatorFile
	res, err := config.Resolve(ctx, src)
	if err != nil {
		return nil, Identity{}, err
	}
	g, g0 := res.Guard, operatorFile.Guard
	if g.DelegateShim == g0.DelegateShim && g.DelegateKind == g0.DelegateKind {
		return res, id, nil
	}
	other, err := identify(ctx, g)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("%s: %w", res.Path, err)
	}
	if other.Kind != id.Kind {
		return nil, Identity{}, fmt.Errorf("%s names delegate_shim %s (%s), but it is loaded by the rules of %s, named by %s (delegate_shim %s): the shim that would run and the file it would load disagree; give both files the same delegate_shim: %w",
			res.Path, g.DelegateShim, other.Kind.Describe(), id.Kind.Describe(), operatorPath, g0.DelegateShim, errdefs.ErrFailedPrecondition)
	}
	return res, other, nil
}
