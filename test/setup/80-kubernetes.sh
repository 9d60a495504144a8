#!/usr/bin/env bash
# A one-node Kubernetes for test/k8s: etcd and the CNI plugins from Debian,
# and kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kubectl built from k8s.io/kubernetes at $version (the module proxy serves
# it; Debian has no Kubernetes).
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging
# directories, which a module download does not have, so the binaries are
# built in a throwaway module that requires it and replaces each staging
# module by its published v0.<minor>.<patch> release instead.
#
# Result: $KSG_CACHE/kubernetes/<version>-<key>/bin/{kube-apiserver,...},
# where key hashes the build's inputs: the version, the commands, the build
# recipe below and the Go version. An existing result is kept; a failed build
# leaves nothing under that name. With --print-dir it only prints that
# directory, and fails when it is not built (the tests ask it where to look).
set -euo pipefail

version=v1.37.2
staging_version=v0.${version#v1.}
KSG_CACHE="${KSG_CACHE:-/var/cache/kata-submount-guard}"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Change recipe with any change to how the binaries are built.
recipe="staging=$staging_version cgo=0 -trimpath -s -w version-stamps=hack/lib/version.sh"
key="$(printf '%s\n' "$version" "${cmds[*]}" "$recipe" "$(go env GOVERSION GOARCH)" | sha256sum | cut -c1-12)"
dest="$KSG_CACHE/kubernetes/$version-$key"
if [[ "${1:-}" == --print-dir ]]; then
	[[ -f "$dest/BUILT" ]] || { echo "kubernetes $version not built in $dest: run test/setup/80-kubernetes.sh" >&2; exit 1; }
	echo "$dest"
	exit 0
fi

packages=(etcd-server containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	apt-get update -q
	# Debian's etcd-server would start a host etcd; the tests run their own.
	DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ -f "$dest/BUILT" ]]; then
	echo "kubernetes $version already built in $dest"
	exit 0
fi

work="$KSG_CACHE/kubernetes/build-$version"
rm -rf "$work" "$dest.tmp"
mkdir -p "$work" "$dest.tmp/bin"
cd "$work"

# The staging replaces, read from k8s.io/kubernetes' own go.mod.
gomod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$gomod" ]] || { echo "80-kubernetes: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
{
	echo "module ksg.invalid/kubernetes-build"
	grep -m1 '^go ' "$gomod"
	echo "require k8s.io/kubernetes $version"
	sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => \./staging/src/k8s.io/[a-z0-9-]*$#replace \1 => \1 '"$staging_version"'#p' "$gomod"
} >go.mod
n="$(grep -c '^replace ' go.mod)"
[[ "$n" -gt 20 ]] || { echo "80-kubernetes: found only $n staging replaces in $gomod" >&2; exit 1; }

pkgs=()
for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
go get "${pkgs[@]/%/@$version}"

# What hack/lib/version.sh stamps, so that `--version` and the API's
# /version say $version instead of v0.0.0-master.
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags=()
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=("-X $p.gitVersion=$version" "-X $p.gitMajor=1" "-X $p.gitMinor=$minor"
		"-X $p.gitTreeState=clean" "-X $p.buildDate=1970-01-01T00:00:00Z")
done
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w ${ldflags[*]}" -o "$dest.tmp/bin/" "${pkgs[@]}"

for c in "${cmds[@]}"; do
	"$dest.tmp/bin/$c" --version 2>/dev/null | grep -q "$version" ||
		"$dest.tmp/bin/$c" version --client 2>/dev/null | grep -q "$version" ||
		{ echo "80-kubernetes: $c does not report $version" >&2; exit 1; }
done
touch "$dest.tmp/BUILT"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "kubernetes $version built in $dest"
