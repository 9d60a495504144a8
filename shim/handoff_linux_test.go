package shim

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const feedHelperEnv = "KSG_SHIM_FEED_HELPER"

// TestFeedStdin runs a child that, like start, drains its stdin, feeds the
// bytes back with feedStdin and execs cat: cat must print them unchanged,
// whatever their size (a pipe would stall past its 64 KiB buffer).
func TestFeedStdin(t *testing.T) {
	cat, err := exec.LookPath("cat")
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"runtime options sized", 120},
		{"larger than a pipe buffer", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.size)
			_, _ = rand.Read(data)
			cmd := exec.Command(os.Args[0], "-test.run=^TestFeedStdinHelper$")
			cmd.Env = append(os.Environ(), feedHelperEnv+"="+cat)
			cmd.Stdin = bytes.NewReader(data)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			require.NoError(t, cmd.Run(), errb.String())
			require.Equal(t, len(data), out.Len())
			require.True(t, bytes.Equal(data, out.Bytes()))
		})
	}
}

func TestFeedStdinHelper(t *testing.T) {
	cat := os.Getenv(feedHelperEnv)
	if cat == "" {
		t.Skip("helper process of TestFeedStdin")
	}
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = feedStdin(data)
	}
	if err == nil {
		err = execve(cat, []string{"cat"}, os.Environ())
	}
	os.Stderr.WriteString(err.Error())
	os.Exit(3)
}

func TestCheckDelegate(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "exe")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	self, err := os.Executable()
	require.NoError(t, err)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"executable", exe, ""},
		{"relative", "bin/shim", `[submount_guard] delegate_shim = "bin/shim" in /etc/k.toml is not an absolute path; set it to the full path of Kata's upstream containerd-shim-kata-v2: invalid argument`},
		{"missing", filepath.Join(dir, "missing"), "delegate shim " + filepath.Join(dir, "missing") + ` ([submount_guard] delegate_shim = "` + filepath.Join(dir, "missing") + `" in /etc/k.toml) cannot be used: no such file or directory; install Kata's upstream containerd-shim-kata-v2 there or point delegate_shim at it: not found`},
		{"directory", dir, "delegate shim " + dir + ` ([submount_guard] delegate_shim = "` + dir + `" in /etc/k.toml) is not a regular file; point delegate_shim at Kata's upstream containerd-shim-kata-v2: failed precondition`},
		{"not executable", plain, "delegate shim " + plain + ` ([submount_guard] delegate_shim = "` + plain + `" in /etc/k.toml) is not executable (mode -rw-r--r--); chmod +x it or point delegate_shim at Kata's upstream containerd-shim-kata-v2: failed precondition`},
		{"itself", self, "delegate shim " + self + ` ([submount_guard] delegate_shim = "` + self + `" in /etc/k.toml) is this guard shim itself; point delegate_shim at Kata's upstream containerd-shim-kata-v2: invalid argument`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDelegate(tc.path, "/etc/k.toml")
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.want)
		})
	}
}
