package config

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
)

// AnnotationEnabled reports whether Kata lets annotation key through the
// table's enable_annotations: keys under io.katacontainers.config.hypervisor.
// need their suffix to match one of the regular expressions (Go syntax,
// unanchored, so "kernel" also admits "kernel_params"; an invalid expression
// matches nothing); other keys are not gated.
func AnnotationEnabled(enable []string, key string) bool {
	if !strings.HasPrefix(key, AnnotationHypervisorPrefix) {
		return true
	}
	name := strings.TrimPrefix(key, AnnotationHypervisorPrefix)
	for _, expr := range enable {
		if ok, err := regexp.MatchString(expr, name); err == nil && ok {
			return true
		}
	}
	return false
}

// pathInGlobs is Kata's check of an annotated path against a list of globs:
// each glob is expanded against the file system and the path must equal one
// of the files found, byte for byte. A malformed glob matches nothing.
func pathInGlobs(globs []string, path string) bool {
	for _, g := range globs {
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			if m == path {
				return true
			}
		}
	}
	return false
}

// pathMatchesPatterns is runtime-rs's validate_path_pattern: path matches
// one of the glob(3) patterns as a string; the file need not exist. A
// malformed pattern matches nothing.
func pathMatchesPatterns(patterns []string, path string) bool {
	for _, p := range patterns {
		if ok, err := filepath.Match(p, path); err == nil && ok {
			return true
		}
	}
	return false
}

// applyAnnotations overrides h with the bundle's hypervisor annotations as
// Kata's SandboxConfig does, and fails where Kata fails sandbox creation.
// runtime-rs (update_config_by_annotation, kata-types 4.1.0) skips a
// hypervisor annotation that enable_annotations does not admit instead of
// failing, and checks an annotated virtio_fs_daemon against
// valid_virtio_fs_daemon_paths as patterns, not as files found.
func applyAnnotations(f *File, kind DelegateKind, name string, h Hypervisor, ann map[string]string) (Hypervisor, error) {
	if len(ann) == 0 {
		return h, nil
	}
	table := "hypervisor." + name
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if AnnotationEnabled(h.EnableAnnotations, k) {
			continue
		}
		if kind == DelegateRuntimeRS {
			ann = withoutKey(ann, k)
			continue
		}
		return Hypervisor{}, fmt.Errorf("annotation %s is not enabled: its name after %q must match a regular expression in [%s] enable_annotations %s of %s (Kata refuses the sandbox too): %w",
			k, AnnotationHypervisorPrefix, table, formatValue(toAny(h.EnableAnnotations)), f.origin(table+".enable_annotations"), errdefs.ErrInvalidArgument)
	}
	bad := func(key, reason string) error {
		return fmt.Errorf("annotation %s=%q: %s: %w", key, ann[key], reason, errdefs.ErrInvalidArgument)
	}

	// Assets (kernel, image, initrd): absolute paths, optional SHA-512.
	if v := ann[AnnotationKernel]; v != "" {
		if !filepath.IsAbs(v) {
			return Hypervisor{}, bad(AnnotationKernel, "not an absolute path")
		}
		if _, err := os.Stat(v); err != nil {
			return Hypervisor{}, fmt.Errorf("annotation %s=%q: %w: %w", AnnotationKernel, v, err, errdefs.ErrNotFound)
		}
		if want := ann[AnnotationKernelHash]; want != "" {
			if err := checkSHA512(v, want, ann[AnnotationAssetHashType]); err != nil {
				return Hypervisor{}, fmt.Errorf("annotation %s: %w", AnnotationKernelHash, err)
			}
		}
		h.Kernel = v
	}
	for _, a := range []struct {
		key string
		dst *string
	}{{AnnotationImage, &h.Image}, {AnnotationInitrd, &h.Initrd}} {
		if v := ann[a.key]; v != "" {
			if !filepath.IsAbs(v) {
				return Hypervisor{}, bad(a.key, "not an absolute path")
			}
			*a.dst = v
		}
	}

	if v, ok := ann[AnnotationSharedFS]; ok {
		allowed := []string{SharedFSVirtio9P, SharedFSVirtioFS}
		if !contains(allowed, v) {
			return Hypervisor{}, bad(AnnotationSharedFS, "allowed: "+strings.Join(allowed, ", "))
		}
		h.SharedFS = v
	}
	if v, ok := ann[AnnotationVirtioFSDaemon]; ok {
		valid := pathInGlobs
		if kind == DelegateRuntimeRS {
			valid = pathMatchesPatterns
		}
		if !valid(h.ValidVirtioFSDaemonPaths, v) {
			return Hypervisor{}, bad(AnnotationVirtioFSDaemon, fmt.Sprintf(
				"not an existing file matched by [%s] valid_virtio_fs_daemon_paths %s of %s",
				table, formatValue(toAny(h.ValidVirtioFSDaemonPaths)), f.origin(table+".valid_virtio_fs_daemon_paths")))
		}
		h.VirtioFSDaemon = v
	}
	if v, ok := ann[AnnotationVirtioFSArgs]; ok {
		var extra []string
		if err := json.Unmarshal([]byte(v), &extra); err != nil {
			return Hypervisor{}, bad(AnnotationVirtioFSArgs, "want a JSON array of strings: "+err.Error())
		}
		// Our daemon's own options choose what runs as root and how the share
		// is protected: that is the operator's call, not a pod's.
		for _, a := range extra {
			if strings.HasPrefix(a, "--guard-") {
				return Hypervisor{}, bad(AnnotationVirtioFSArgs, fmt.Sprintf(
					"%q is a kata-virtiofsd option only the configuration file may set; remove it from the pod's annotations", a))
			}
		}
		// Kata appends annotated arguments to the configured ones.
		h.VirtioFSExtraArgs = append(append([]string(nil), h.VirtioFSExtraArgs...), extra...)
	}
	if h.SharedFS == SharedFSVirtioFS && h.VirtioFSDaemon == "" {
		return Hypervisor{}, fmt.Errorf("[%s]: virtio-fs without a virtio_fs_daemon (Kata refuses this too): %w", table, errdefs.ErrInvalidArgument)
	}
	if v, ok := ann[AnnotationVirtioFSCache]; ok {
		h.VirtioFSCache = v
	}
	if v := ann[AnnotationKernelParams]; v != "" {
		h.KernelParams = strings.TrimSpace(h.KernelParams + " " + v)
	}
	return h, nil
}

func checkSHA512(path, want, hashType string) error {
	if hashType != "" && hashType != "sha512" {
		return fmt.Errorf("hash type %q is not supported (only sha512): %w", hashType, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha512.New()
	if _, err := io.Copy(sum, f); err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != want {
		return fmt.Errorf("%s has SHA-512 %s, annotation expects %s: %w", path, got, want, errdefs.ErrInvalidArgument)
	}
	return nil
}

// withoutKey returns a copy of m without key; the caller's map is not ours
// to change.
func withoutKey(m map[string]string, key string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func toAny(list []string) []any {
	out := make([]any, len(list))
	for i, s := range list {
		out[i] = s
	}
	return out
}
