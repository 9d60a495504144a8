#!/usr/bin/env bash
# Debian's own kernel images for the guest-kernel inspection tests
# (virtcontainers/guestkernel/real_test.go), fetched with apt-get download and
# unpacked with dpkg-deb into
#
#   $KSG_CACHE/debian-kernels/<name>/{vmlinuz|vmlinux,config,PACKAGE}
#
#   bookworm-cloud-amd64  current bookworm cloud kernel, 6.1.y (fixed from
#                         6.1.76-1): LZ4 bzImage, FUSE a module
#   bullseye-cloud-amd64  bullseye cloud kernel, 5.10.y (never fixed): LZ4 bzImage
#   trixie-cloud-amd64    trixie cloud kernel, 6.12.y: zstd bzImage, FUSE built
#                         in, so its BTF shows the fix
#   trixie-arm64          trixie arm64 kernel: raw arm64 Image (EFI stub), FUSE
#                         built in; plus Image.gz made with kbuild's gzip -n -9
#   bookworm-ppc64el      bookworm ppc64el kernel: ELF vmlinux, FUSE a module, no BTF
#
# Debian no longer serves a 6.1 kernel older than 6.1.76-1 (apt-cache madison
# lists only the current bookworm one), so the vulnerable Debian image is the
# 5.10 one. No Debian kernel is an EFI zboot image (CONFIG_EFI_ZBOOT is off);
# the tests wrap the real arm64 Image.gz in a zboot header instead.
#
# apt runs with a private sources list and state under the cache dir, so the
# system's apt configuration is untouched. Idempotent: a name whose directory
# exists is not fetched again (delete it to refresh).
set -euo pipefail

cache=${KSG_CACHE:-/var/cache/kata-submount-guard}
out=$cache/debian-kernels
aptdir=$out/.apt

die() { echo "40-debian-kernel.sh: $*" >&2; exit 1; }

# name  suite  metapackage  arch  file in /boot
images=(
	"bookworm-cloud-amd64 bookworm linux-image-cloud-amd64 amd64 vmlinuz"
	"bullseye-cloud-amd64 bullseye linux-image-cloud-amd64 amd64 vmlinuz"
	"trixie-cloud-amd64 trixie linux-image-cloud-amd64 amd64 vmlinuz"
	"trixie-arm64 trixie linux-image-arm64 arm64 vmlinuz"
	"bookworm-ppc64el bookworm linux-image-powerpc64le ppc64el vmlinux"
)

missing=()
for spec in "${images[@]}"; do
	read -r name _ <<<"$spec"
	[[ -d $out/$name ]] || missing+=("$spec")
done
((${#missing[@]})) || exit 0

for tool in apt-get apt-cache dpkg-deb gzip; do
	command -v "$tool" >/dev/null || die "$tool missing"
done

mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || die "$keyring missing (install debian-archive-keyring)"
{
	for suite in bullseye bookworm trixie; do
		echo "deb [arch=amd64,arm64,ppc64el signed-by=$keyring] http://deb.debian.org/debian $suite main"
	done
} >"$aptdir/sources.list"
apt_opts=(
	-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache"
	-o APT::Architectures::=arm64 -o APT::Architectures::=ppc64el
	-o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -q update >/dev/null || die "apt-get update failed for $aptdir/sources.list"

for spec in "${missing[@]}"; do
	read -r name suite meta arch file <<<"$spec"
	# The metapackage of that suite names the kernel package of the moment.
	version=$(apt-cache "${apt_opts[@]}" madison "$meta:$arch" |
		awk -F' *[|] *' -v s="$suite/main" '$3 ~ "^http.* "s" " {print $2; exit}')
	[[ -n $version ]] || die "$meta:$arch not found in $suite"
	pkg=$(apt-cache "${apt_opts[@]}" show "$meta:$arch=$version" |
		sed -n 's/^Depends: \(linux-image-[^ ,]*\) (= .*/\1/p' | head -n1)
	[[ -n $pkg ]] || die "cannot resolve the kernel package of $meta:$arch=$version"
	echo "==> $name: $pkg $version" >&2
	tmp=$out/$name.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	(cd "$tmp" && apt-get "${apt_opts[@]}" -q download "$pkg:$arch=$version" >/dev/null)
	deb=$(ls "$tmp"/*.deb)
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards "./boot/$file-*" './boot/config-*'
	mv "$tmp"/boot/"$file"-* "$tmp/$file"
	mv "$tmp"/boot/config-* "$tmp/config"
	rm -rf "$tmp/boot" "$deb"
	echo "$pkg $version" >"$tmp/PACKAGE"
	if [[ $name == *arm64 ]]; then
		# arch/arm64/boot/Image.gz is kbuild's cmd_gzip of Image.
		gzip -n -f -9 <"$tmp/$file" >"$tmp/Image.gz"
	fi
	mv "$tmp" "$out/$name"
done
