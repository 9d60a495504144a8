#!/usr/bin/env bash
# Builds the e2e guest kernels from Debian's linux-source-6.1 (x86_64 tinyconfig
# + guest.config, BTF on), cached outside the repo:
#
#   $KSG_CACHE/kernels/<key>/<variant>/{bzImage,vmlinux}
#   key = <linux-source-6.1 package version>-<sha256 of patch, fragment, this script>
#
# Variants (release as `uname -r` prints it, fix as the source and BTF show it):
#   fixed             6.1.192  source as shipped (carries the c4d361f66ac9 backport)
#   vulnerable        6.1.69   revert-fuse-submount-lookup.patch applied
#   lying-fixed       6.1.192  reverted source: version says fixed, BTF says vulnerable
#   lying-vulnerable  6.1.69   shipped source: version says vulnerable, BTF says fixed
#   fixed-nobtf       6.1.192  vmlinux of `fixed` without its .BTF section
#   vulnerable-nobtf  6.1.69   vmlinux of `vulnerable` without its .BTF section
# <key>/MANIFEST has one line per variant: variant<TAB>release<TAB>banner.
#
# Two full compiles (shipped and reverted source, out-of-tree); the version
# variants are relinks with SUBLEVEL=69. Idempotent: an existing key dir is
# reused; builds happen in <key>.tmp and are renamed into place at the end. An
# interrupted build resumes in <key>.tmp (same key, same inputs): stamps mark
# the finished extraction and configuration, make redoes only what is missing.
#
#   build.sh               build if missing, print the key dir
#   build.sh --print-dir   print the key dir; exit 1 if it is not built
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${KSG_CACHE:-/var/cache/kata-submount-guard}
source_pkg=linux-source-6.1
source_tar=/usr/src/linux-source-6.1.tar.xz
patch_file=$here/revert-fuse-submount-lookup.patch
fragment=$here/guest.config
vulnerable_sublevel=69

die() { echo "test/kernels/build.sh: $*" >&2; exit 1; }

pkg_version=$(dpkg-query -W -f='${Version}' "$source_pkg" 2>/dev/null) ||
	die "$source_pkg is not installed (test/setup/10-apt.sh installs it)"
inputs_hash=$(cat "$patch_file" "$fragment" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
key="$pkg_version-$inputs_hash"
kernels=$cache/kernels
out=$kernels/$key

case "${1:-}" in
--print-dir)
	[[ -f $out/MANIFEST ]] || die "guest kernels not built in $out: run test/kernels/build.sh"
	echo "$out"
	exit 0
	;;
"") ;;
*) die "unknown argument ${1} (usage: build.sh [--print-dir])" ;;
esac

if [[ -f $out/MANIFEST ]]; then
	echo "$out"
	exit 0
fi

[[ -r $source_tar ]] || die "$source_tar missing (install $source_pkg)"
for tool in make gcc pahole objcopy flex bison bc; do
	command -v "$tool" >/dev/null || die "$tool missing (test/setup/10-apt.sh installs it)"
done

mkdir -p "$kernels"
# One builder at a time; a second caller waits and then finds the result.
exec 9>"$kernels/.lock"
flock 9
if [[ -f $out/MANIFEST ]]; then
	echo "$out"
	exit 0
fi

tmp=$out.tmp
mkdir -p "$tmp/work"
rm -f "$tmp/MANIFEST.part"
work=$tmp/work
jobs=$(nproc)
log() { echo "==> [$(date +%T)] $*" >&2; }

# Reproducible banners: no host name, user or wall-clock time in the image.
export KBUILD_BUILD_USER=ksg KBUILD_BUILD_HOST=kata-submount-guard
export KBUILD_BUILD_TIMESTAMP="Mon Jan  1 00:00:00 UTC 2024" KBUILD_BUILD_VERSION=1

kmake() { # kmake SRC OBJ ARGS...
	local src=$1 obj=$2
	shift 2
	make -s -C "$src" O="$obj" ARCH=x86_64 "$@"
}

configure() { # configure SRC OBJ
	local src=$1 obj=$2 line opt
	[[ -f $obj/.ksg-configured ]] && return
	mkdir -p "$obj"
	kmake "$src" "$obj" tinyconfig >/dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >/dev/null
	kmake "$src" "$obj" olddefconfig >/dev/null
	while IFS= read -r line; do
		[[ $line == CONFIG_* ]] || continue
		grep -qxF "$line" "$obj/.config" || {
			opt=${line%%=*}
			die "$fragment: $line did not survive olddefconfig (got: $(grep -E "^(# )?$opt[= ]" "$obj/.config" || echo unset)); fix its dependencies"
		}
	done <"$fragment"
	touch "$obj/.ksg-configured"
}

save() { # save SRC OBJ VARIANT [make args...]
	local src=$1 obj=$2 variant=$3
	shift 3
	local t0=$SECONDS
	kmake "$src" "$obj" -j"$jobs" "$@" bzImage
	mkdir -p "$tmp/$variant"
	cp "$obj/arch/x86/boot/bzImage" "$obj/vmlinux" "$tmp/$variant/"
	local release banner
	release=$(kmake "$src" "$obj" "$@" kernelrelease)
	# awk reads to the end: an early exit would SIGPIPE strings under pipefail.
	banner=$(strings -a "$tmp/$variant/vmlinux" | awk '/^Linux version / && !b { b = $0 } END { print b }')
	[[ -n $banner ]] || die "$variant: no Linux version banner in vmlinux"
	[[ $banner == "Linux version $release "* ]] || die "$variant: banner '$banner' does not match release $release"
	printf '%s\t%s\t%s\n' "$variant" "$release" "$banner" >>"$tmp/MANIFEST.part"
	log "$variant ($release) built in $((SECONDS - t0)) s"
}

strip_btf() { # strip_btf FROM TO
	mkdir -p "$tmp/$2"
	objcopy --remove-section=.BTF "$tmp/$1/vmlinux" "$tmp/$2/vmlinux"
	grep -P "^$1\t" "$tmp/MANIFEST.part" | sed "s/^$1\t/$2\t/" >>"$tmp/MANIFEST.part"
}

if [[ ! -f $work/.ksg-extracted ]]; then
	log "extracting $source_tar ($source_pkg $pkg_version)"
	rm -rf "$work"/src-* "$work"/obj-*
	mkdir -p "$work/src-fixed"
	tar -xJf "$source_tar" -C "$work/src-fixed" --strip-components=1
	grep -q 'struct fuse_submount_lookup {' "$work/src-fixed/fs/fuse/fuse_i.h" ||
		die "$source_pkg $pkg_version does not carry the fix this suite expects (no struct fuse_submount_lookup)"
	# The reverted tree shares every unpatched file with the shipped one.
	cp -al "$work/src-fixed" "$work/src-reverted"
	for f in $(grep -E '^\+\+\+ b/' "$patch_file" | sed -e 's|^+++ b/||' -e 's|\t.*||'); do
		cp --remove-destination "$work/src-fixed/$f" "$work/src-reverted/$f"
	done
	patch -s -p1 -d "$work/src-reverted" <"$patch_file"
	if grep -rq submount_lookup "$work/src-reverted/fs/fuse"; then
		die "revert left submount_lookup in fs/fuse"
	fi
	touch "$work/.ksg-extracted"
fi

t_all=$SECONDS
log "configuring"
configure "$work/src-fixed" "$work/obj-fixed"
configure "$work/src-reverted" "$work/obj-reverted"

log "building shipped source (full compile)"
save "$work/src-fixed" "$work/obj-fixed" fixed
save "$work/src-fixed" "$work/obj-fixed" lying-vulnerable SUBLEVEL=$vulnerable_sublevel
log "building reverted source (full compile)"
save "$work/src-reverted" "$work/obj-reverted" vulnerable SUBLEVEL=$vulnerable_sublevel
save "$work/src-reverted" "$work/obj-reverted" lying-fixed
strip_btf fixed fixed-nobtf
strip_btf vulnerable vulnerable-nobtf
cp "$work/obj-fixed/.config" "$tmp/config"
log "all variants built in $((SECONDS - t_all)) s"

if [[ ${KSG_KEEP_KERNEL_WORK:-0} != 1 ]]; then
	rm -rf "$work"
fi
mv "$tmp/MANIFEST.part" "$tmp/MANIFEST"
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
