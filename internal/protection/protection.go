package protection

// Protection is how virtiofsd serves a sandbox's share.
type Protection string

const (
	// Recover: kata-virtiofsd serves the share with its own daemon, which
	// keeps submounts and recovers submount roots the guest forgot.
	Recover Protection = "recover"
	// NoSubmounts: the upstream virtiofsd does not announce submounts.
	NoSubmounts Protection = "no-submounts"
	// None: virtiofsd runs exactly as Kata configured it.
	None Protection = "none"
)

// All returns every protection, strongest first: the order in which
// configuration errors list them.
func All() []Protection { return []Protection{Recover, NoSubmounts, None} }

// Valid reports whether p is one of All.
func (p Protection) Valid() bool {
	switch p {
	case Recover, NoSubmounts, None:
		return true
	}
	return false
}
