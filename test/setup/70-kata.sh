#!/usr/bin/env bash
# Kata Containers' own Go runtime, built from the release archives in
# ../shared/upstream (exports of the public repository at release tags), for
# the tests that use Kata's code as the reference: its real
# containerd-shim-kata-v2 and kata-runtime, and its extracted source tree
# (test-only files are compiled into that tree, never into this repo).
#
# Result, for each archived tag T:
#   $KSG_CACHE/kata/T/src   the extracted tree (kata-containers-T/...)
#   $KSG_CACHE/kata/T/bin   containerd-shim-kata-v2, kata-runtime
#   $KSG_CACHE/kata/T/root  Kata's default configuration paths, moved here
#                           (PREFIX=root/usr, SYSCONFDIR=root/etc) so that
#                           tests of the defaults never touch /etc or /usr
#   $KSG_CACHE/kata/T/ARCHIVE_SHA256   the archive it came from
# 4.1.0's runtime-rs and kata-deploy sources (Rust, not buildable here) are
# extracted to $KSG_CACHE/kata/4.1.0-rs/src for the tests that cite them.
# Keyed by the archive's sha256: an unchanged archive is not rebuilt.
# Without the archives this step says so and stops; the tests that need Kata
# then skip (and fail under CI).
set -euo pipefail

KSG_CACHE="${KSG_CACHE:-/var/cache/kata-submount-guard}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
upstream="${KSG_UPSTREAM:-$repo/../shared/upstream}"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

if ! compgen -G "$upstream/kata-containers-*-runtime*.tar.gz" >/dev/null; then
	echo "70-kata: no Kata archives in $upstream; the tests against Kata's own code will skip" >&2
	if [[ "${CI:-}" == true ]]; then exit 1; fi
	exit 0
fi

# extract ARCHIVE DEST: DEST/src holds the tree of ARCHIVE, swapped in whole.
# Returns 1 when DEST already holds this archive.
extract() {
	local archive=$1 dest=$2 sum
	sum="$(sha256sum "$archive" | cut -d' ' -f1)"
	if [[ -f "$dest/ARCHIVE_SHA256" && "$(cat "$dest/ARCHIVE_SHA256")" == "$sum" ]]; then
		return 1
	fi
	rm -rf "$dest.tmp"
	mkdir -p "$dest.tmp/src"
	tar -xzf "$archive" -C "$dest.tmp/src"
	echo "$sum" >"$dest.tmp/ARCHIVE_SHA256.pending"
	rm -rf "$dest"
	mv "$dest.tmp" "$dest"
	return 0
}

for archive in "$upstream"/kata-containers-*-runtime.tar.gz; do
	tag="$(basename "$archive")"
	tag="${tag#kata-containers-}"
	tag="${tag%-runtime.tar.gz}"
	dest="$KSG_CACHE/kata/$tag"
	if ! extract "$archive" "$dest"; then
		echo "kata $tag already built in $dest"
		continue
	fi
	echo "==> building Kata $tag's shim and kata-runtime"
	src="$dest/src/kata-containers-$tag/src/runtime"
	mod=()
	[[ -d "$src/vendor" ]] && mod=(-mod=vendor)
	(
		cd "$src"
		# Generated from *.in by Kata's Makefile, as a distribution build
		# with its prefix moved under root/.
		make -s PREFIX="$dest/root/usr" SYSCONFDIR="$dest/root/etc" \
			pkg/katautils/config-settings.go config/configuration-qemu.toml >/dev/null
		mkdir -p "$dest/root/etc/kata-containers" "$dest/root/usr/share/defaults/kata-containers"
		mkdir -p "$dest/bin"
		GOFLAGS= go build "${mod[@]}" -o "$dest/bin/" ./cmd/containerd-shim-kata-v2 ./cmd/kata-runtime
	)
	"$dest/bin/containerd-shim-kata-v2" --version
	mv "$dest/ARCHIVE_SHA256.pending" "$dest/ARCHIVE_SHA256"
done

rs="$upstream/kata-containers-4.1.0-runtime-rs-deploy.tar.gz"
if [[ -f "$rs" ]] && extract "$rs" "$KSG_CACHE/kata/4.1.0-rs"; then
	mv "$KSG_CACHE/kata/4.1.0-rs/ARCHIVE_SHA256.pending" "$KSG_CACHE/kata/4.1.0-rs/ARCHIVE_SHA256"
	echo "runtime-rs 4.1.0 sources in $KSG_CACHE/kata/4.1.0-rs/src"
fi
