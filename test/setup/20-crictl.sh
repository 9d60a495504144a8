#!/usr/bin/env bash
# crictl, the CRI client the containerd integration tests drive, built from
# source with `go install` (the module proxy serves it) into $KSG_CACHE/bin.
# Skips the build when that exact version is already there.
set -euo pipefail
version=v1.34.0
cache="${KSG_CACHE:-/var/cache/kata-submount-guard}"
bin="$cache/bin"
stamp="$bin/.crictl-$version"
if [[ -x "$bin/crictl" && -e "$stamp" ]]; then
	exit 0
fi
mkdir -p "$bin"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
GOBIN="$bin" CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@$version"
rm -f "$bin"/.crictl-*
touch "$stamp"
echo "crictl $version installed in $bin"
