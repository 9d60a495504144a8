// Command image writes the kata-submount-guard-deploy container image as an
// OCI image archive (an OCI layout in a tar), without a Docker daemon: one
// layer holding our four static binaries in /kata-submount-guard/bin, the
// installer as entrypoint. `make image` runs it; the archive imports with
// `ctr -n k8s.io images import`, under the name given here.
//
//	go run ./deploy/image -o bin/kata-submount-guard-image.tar -name REF BIN...
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinDir is where the image holds our binaries.
const BinDir = "/kata-submount-guard/bin"

// Entrypoint is the installer; the DaemonSet's args choose the command.
const Entrypoint = BinDir + "/kata-submount-guard-deploy"

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("o", "", "the OCI archive to write")
	ref := fs.String("name", "", "the image reference it imports as, e.g. ghcr.io/org/name:tag")
	arch := fs.String("arch", runtime.GOARCH, "the image's architecture (that of the binaries)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *ref == "" || fs.NArg() == 0 {
		return fmt.Errorf("usage: image -o ARCHIVE -name REF BINARY...")
	}
	return Build(*out, *ref, *arch, fs.Args())
}

// Build writes the image made of binaries to the OCI archive out.
func Build(out, ref, arch string, binaries []string) error {
	layerTar, err := binariesTar(binaries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = []string{Entrypoint}
	cf.Config.Cmd = []string{"install"}
	cf.Config.Env = []string{"PATH=" + BinDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.title": "kata-submount-guard-deploy"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}

	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		// containerd names the imported image by the first; the OCI
		// annotation is the tag alone, as the spec has it.
		"io.containerd.image.name":          fullRef(ref),
		"org.opencontainers.image.ref.name": tagOf(ref),
	}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch})); err != nil {
		return err
	}
	return tarDir(dir, out)
}

// fullRef spells ref as containerd and the kubelet name images: with its
// registry (docker.io by default) and tag (latest by default).
func fullRef(ref string) string {
	name := ref
	slash := strings.IndexByte(ref, '/')
	switch {
	case slash < 0:
		name = "docker.io/library/" + ref
	case !strings.ContainsAny(ref[:slash], ".:") && ref[:slash] != "localhost":
		name = "docker.io/" + ref // the first part is a Docker Hub user
	}
	if last := name[strings.LastIndexByte(name, '/')+1:]; !strings.ContainsAny(last, ":@") {
		name += ":latest"
	}
	return name
}

func tagOf(ref string) string {
	last := ref[strings.LastIndexByte(ref, '/')+1:]
	if i := strings.IndexByte(last, ':'); i >= 0 {
		return last[i+1:]
	}
	return "latest"
}

// epoch dates every file and the image, so that equal binaries give an
// equal image.
var epoch = time.Unix(0, 0)

// binariesTar is the layer: BinDir with each binary, root-owned, 0755.
func binariesTar(binaries []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	parts := strings.Split(strings.Trim(BinDir, "/"), "/")
	for i := range parts {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, b := range binaries {
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: strings.Trim(BinDir, "/") + "/" + filepath.Base(b), Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the OCI layout in dir as the tar out, atomically.
func tarDir(dir, out string) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), epoch, 0, 0, "", ""
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		tmp.Close()
		return err
	}
	if err := tw.Close(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
