#!/usr/bin/env bash
# Whole-process timings for BENCHMARKS.md ("Guest kernel inspection"), side by
# side on the same images: file(1), strings | grep 'Linux version', and
# bin/kata-runtime guest-kernel inspect --json (header only, cold, cached),
# measured with hyperfine. Prints one markdown table per image.
#
#   test/bench/guestkernel.sh [IMAGE...]
#
# Without arguments: the real images test/setup provides (Debian's kernels
# and the tinyconfig `fixed` build). Needs `make build` first.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/bin/kata-runtime
cache=${KSG_CACHE:-/var/cache/kata-submount-guard}

[[ -x $bin ]] || { echo "guestkernel.sh: $bin missing: run make build" >&2; exit 1; }
for tool in hyperfine file strings; do
	command -v "$tool" >/dev/null || { echo "guestkernel.sh: $tool missing (test/setup/10-apt.sh installs it)" >&2; exit 1; }
done

images=("$@")
if ((${#images[@]} == 0)); then
	for f in "$cache"/debian-kernels/*/vmlinu[xz]; do
		[[ -f $f ]] && images+=("$f")
	done
	if kdir=$("$root/test/kernels/build.sh" --print-dir 2>/dev/null); then
		images+=("$kdir/fixed/bzImage" "$kdir/fixed/vmlinux")
	fi
fi
((${#images[@]})) || { echo "guestkernel.sh: no images (run test/setup or pass paths)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for img in "${images[@]}"; do
	"$bin" guest-kernel inspect --cache-dir "$tmp/cache" "$img" >/dev/null # fill the cache
	echo
	echo "### $img ($(stat -c %s "$img") bytes)"
	echo
	# -N: no intermediate shell, except where a pipe needs one. grep finds
	# nothing in compressed images and exits 1: failures are ignored.
	hyperfine -N --warmup 2 --min-runs 10 --ignore-failure --style none \
		--export-markdown "$tmp/table.md" \
		-n "file" "file $img" \
		-n "strings | grep" "sh -c 'strings -a $img | grep \"Linux version\"'" \
		-n "kata-runtime --header-only" "$bin guest-kernel inspect --json --header-only $img" \
		-n "kata-runtime cold" "$bin guest-kernel inspect --json $img" \
		-n "kata-runtime cached" "$bin guest-kernel inspect --json --cache-dir $tmp/cache $img" \
		>/dev/null
	cat "$tmp/table.md"
done
