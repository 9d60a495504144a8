package harness

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kata-submount-guard/kata-submount-guard/test/testutil"
)

// The archive must be what GNU cpio reads as newc, with the right types,
// modes, device numbers and contents.
func TestWriteInitramfsReadByCpio(t *testing.T) {
	cpio := testutil.RequiresCommand(t, "cpio")
	dir := t.TempDir()
	initBin := filepath.Join(dir, "fake-init")
	payload := []byte("#!/bin/sh\necho odd-length payload\n")
	require.NoError(t, os.WriteFile(initBin, payload, 0o755))
	archive := filepath.Join(dir, "initramfs.cpio")
	require.NoError(t, WriteInitramfs(archive, initBin))

	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	list := exec.Command(cpio, "-itv", "--quiet")
	list.Stdin = f
	out, err := list.CombinedOutput()
	require.NoError(t, err, "%s", out)
	listing := string(out)
	for _, want := range []string{"crw-------", "5,   1", "dev/console", "drwxr-xr-x", "share", "-rwxr-xr-x"} {
		require.Contains(t, listing, want)
	}

	extract := filepath.Join(dir, "x")
	require.NoError(t, os.Mkdir(extract, 0o755))
	_, err = f.Seek(0, 0)
	require.NoError(t, err)
	get := exec.Command(cpio, "-id", "--quiet", "init")
	get.Dir, get.Stdin = extract, f
	out, err = get.CombinedOutput()
	require.NoError(t, err, "%s", out)
	got, err := os.ReadFile(filepath.Join(extract, "init"))
	require.NoError(t, err)
	require.Equal(t, payload, got)
}

func TestWriteNewcRejectsEmptyName(t *testing.T) {
	var b bytes.Buffer
	err := WriteNewc(&b, []CPIOEntry{{Name: "/", Mode: ModeDir | 0o755}})
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "empty name"), err.Error())
}
