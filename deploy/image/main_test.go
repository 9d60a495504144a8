package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFullRef(t *testing.T) {
	for ref, want := range map[string]string{
		"ghcr.io/kata-submount-guard/kata-submount-guard-deploy:latest": "ghcr.io/kata-submount-guard/kata-submount-guard-deploy:latest",
		"ghcr.io/org/name":       "ghcr.io/org/name:latest",
		"localhost:5000/x:1":     "localhost:5000/x:1",
		"localhost/x":            "localhost/x:latest",
		"user/name:v1":           "docker.io/user/name:v1",
		"busybox":                "docker.io/library/busybox:latest",
		"reg.example/a/b@sha256": "reg.example/a/b@sha256",
	} {
		assert.Equal(t, want, fullRef(ref), ref)
	}
}

// The archive is an OCI layout whose one image runs the installer and holds
// every binary given, named for containerd's import.
func TestBuildWritesAnOCIArchive(t *testing.T) {
	dir := t.TempDir()
	var bins []string
	for _, b := range []string{"containerd-shim-kata-v2", "kata-runtime", "kata-virtiofsd", "kata-submount-guard-deploy"} {
		p := filepath.Join(dir, b)
		require.NoError(t, os.WriteFile(p, []byte("binary "+b), 0o755))
		bins = append(bins, p)
	}
	out := filepath.Join(dir, "image.tar")
	require.NoError(t, Build(out, "ghcr.io/org/deploy:v1", "amd64", bins))

	unpacked := t.TempDir()
	untar(t, out, unpacked)
	idx, err := layout.ImageIndexFromPath(unpacked)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	desc := im.Manifests[0]
	assert.Equal(t, "ghcr.io/org/deploy:v1", desc.Annotations["io.containerd.image.name"])
	assert.Equal(t, "v1", desc.Annotations["org.opencontainers.image.ref.name"])
	assert.Equal(t, "application/vnd.oci.image.manifest.v1+json", string(desc.MediaType))

	img, err := idx.Image(desc.Digest)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, []string{"/kata-submount-guard/bin/kata-submount-guard-deploy"}, cf.Config.Entrypoint)
	assert.Equal(t, []string{"install"}, cf.Config.Cmd)
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, "amd64", cf.Architecture)

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			assert.Equal(t, int64(0o755), h.Mode, h.Name)
			files[h.Name] = string(b)
		}
	}
	assert.Equal(t, map[string]string{
		"kata-submount-guard/bin/containerd-shim-kata-v2":    "binary containerd-shim-kata-v2",
		"kata-submount-guard/bin/kata-runtime":               "binary kata-runtime",
		"kata-submount-guard/bin/kata-virtiofsd":             "binary kata-virtiofsd",
		"kata-submount-guard/bin/kata-submount-guard-deploy": "binary kata-submount-guard-deploy",
	}, files)

	// Same binaries, same archive.
	again := filepath.Join(dir, "again.tar")
	require.NoError(t, Build(again, "ghcr.io/org/deploy:v1", "amd64", bins))
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	assert.True(t, bytes.Equal(a, b), "the archive is reproducible")
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(p, 0o755))
			continue
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
}
