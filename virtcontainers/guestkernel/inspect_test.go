package guestkernel

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/virtcontainers/guestkernel/verdict"
)

// TestInspectBadInput: every bad path or image gives one clear error naming
// the path, an errdefs class, and a Report with verdict unknown; no panic.
func TestInspectBadInput(t *testing.T) {
	x86 := elfArches[0]
	good := kernelELF(x86, bannerFixed61, nil)
	bz := makeBzImage("6.1.76 (ksg@build) #1 SMP", withSize(kbuildCompress(t, compGzip, good), len(good)))
	corrupt := append([]byte(nil), bz...)
	for i := 1100; i < len(corrupt)-8; i += 3 {
		corrupt[i] ^= 0xa5
	}

	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))

	for _, tc := range []struct {
		name  string
		path  func(t *testing.T) string
		class func(error) bool
		want  string
	}{
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, errdefs.IsNotFound, "no such file"},
		{"directory", func(t *testing.T) string { return t.TempDir() }, errdefs.IsInvalidArgument, "is a directory"},
		{"fifo", func(*testing.T) string { return fifo }, errdefs.IsInvalidArgument, "not a regular file"},
		{"empty", func(t *testing.T) string { return writeTemp(t, "empty", nil) }, errdefs.IsInvalidArgument, "empty file"},
		{"tiny", func(t *testing.T) string { return writeTemp(t, "tiny", []byte("MZ")) }, errdefs.IsInvalidArgument, "only 2 bytes"},
		{"random bytes", func(t *testing.T) string { return writeTemp(t, "random", codeLike(1<<16, 9)) }, errdefs.IsInvalidArgument, "unrecognised format"},
		{"elf that is no kernel", func(t *testing.T) string {
			return writeTemp(t, "prog", makeELF(x86, []elfSection{{".rodata", 2, []byte("hello world\n")}}))
		}, errdefs.IsInvalidArgument, "no \"Linux version\" banner"},
		{"truncated elf", func(t *testing.T) string { return writeTemp(t, "vmlinux", good[:100]) }, errdefs.IsInvalidArgument, "ELF"},
		{"truncated bzImage", func(t *testing.T) string { return writeTemp(t, "bzImage", bz[:len(bz)-100]) }, errdefs.IsInvalidArgument, "outside the"},
		{"corrupt bzImage payload", func(t *testing.T) string { return writeTemp(t, "bzImage", corrupt) }, errdefs.IsInvalidArgument, "bzImage payload"},
		{"bzImage with unknown payload", func(t *testing.T) string {
			b := makeBzImage("6.1.76 (x) #1", []byte("not compressed at all, just text"))
			return writeTemp(t, "bzImage", b)
		}, errdefs.IsInvalidArgument, "no known compression"},
		{"truncated gzip", func(t *testing.T) string {
			gz := kbuildCompress(t, compGzip, good)
			return writeTemp(t, "vmlinux.gz", gz[:len(gz)/2])
		}, errdefs.IsInvalidArgument, "gzip"},
		{"zboot payload out of bounds", func(t *testing.T) string {
			b := makeZboot("gzip", 0xaa64, []byte("\x1f\x8b short"))
			binary.LittleEndian.PutUint32(b[12:], 1<<30)
			return writeTemp(t, "vmlinuz.efi", b)
		}, errdefs.IsInvalidArgument, "outside the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.path(t)
			rep, err := Inspect(context.Background(), p, verdict.Options{})
			require.Error(t, err)
			require.True(t, tc.class(err), "class of %v", err)
			require.ErrorContains(t, err, tc.want)
			require.Contains(t, err.Error(), p, "the error names the file")
			require.NotNil(t, rep)
			require.Equal(t, p, rep.Path)
			require.Equal(t, verdict.Unknown, rep.Verdict)
			require.Equal(t, verdict.EvidenceNone, rep.Evidence)
			require.Equal(t, err.Error(), rep.Error)
			require.NotEmpty(t, rep.Reason)
		})
	}
}

func TestOpenErrorClasses(t *testing.T) {
	require.True(t, errdefs.IsNotFound(openError("/x", fs.ErrNotExist)))
	require.True(t, errdefs.IsPermissionDenied(openError("/x", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES})))
	require.True(t, errdefs.IsInvalidArgument(openError("/x", syscall.ELOOP)))
}

// TestInspectUnreadable runs Inspect as an unprivileged user on a file only
// root may read (root itself bypasses file modes).
func TestInspectUnreadable(t *testing.T) {
	if os.Getenv("KSG_GK_UNREADABLE") != "" {
		_, err := Inspect(context.Background(), os.Getenv("KSG_GK_UNREADABLE"), verdict.Options{})
		fmt.Printf("permission-denied=%v error=%v\n", errdefs.IsPermissionDenied(err), err)
		return
	}
	dir := t.TempDir()
	// t.TempDir makes a private parent per test; the other user needs to pass it.
	for _, d := range []string{filepath.Dir(dir), dir} {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	img := filepath.Join(dir, "vmlinux")
	require.NoError(t, os.WriteFile(img, kernelELF(elfArches[0], bannerFixed61, nil), 0o600))
	if os.Geteuid() != 0 {
		_, err := Inspect(context.Background(), "/proc/1/mem", verdict.Options{})
		require.Error(t, err)
		require.True(t, errdefs.IsPermissionDenied(err) || errdefs.IsInvalidArgument(err), "%v", err)
		return
	}
	// Copy the test binary where the unprivileged user can run it.
	self, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	bin := filepath.Join(dir, "guestkernel.test")
	require.NoError(t, os.WriteFile(bin, self, 0o755))
	cmd := exec.Command(bin, "-test.run=^TestInspectUnreadable$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KSG_GK_UNREADABLE="+img)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "permission-denied=true")
	require.Contains(t, string(out), "inspect "+img+": permission denied")
}

func TestInspectCancelled(t *testing.T) {
	p := writeTemp(t, "vmlinux", kernelELF(elfArches[0], bannerFixed61, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := Inspect(ctx, p, verdict.Options{})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, verdict.Unknown, rep.Verdict)
}

// TestReasonsAreActionable: every reason for a non-fixed verdict tells what
// to do or why nothing is needed.
func TestReasonsAreActionable(t *testing.T) {
	for _, release := range []string{"6.1.69", "6.1.0-18-amd64", "5.4.1", "6.7.0-rc5", "junk", ""} {
		r := &verdict.Report{Release: release}
		verdict.Judge(r, nil)
		if r.Verdict == verdict.Fixed {
			continue
		}
		ok := strings.Contains(r.Reason, "fixed_releases") || strings.Contains(r.Reason, "upgrade") ||
			strings.Contains(r.Reason, "cannot occur")
		require.True(t, ok, "%s: %s", release, r.Reason)
	}
}
