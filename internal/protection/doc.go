// Package protection names how virtiofsd serves the share of a sandbox that
// goes on with a vulnerable or unknown guest kernel: the value of
// [submount_guard] virtiofs_protection, of a plan's "protection" and of
// kata-virtiofsd's --guard-protection. It is one type in a leaf package so
// that config, the plan, the daemon and the tests share it without string
// conversions and without importing each other.
package protection
