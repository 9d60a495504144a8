#!/usr/bin/env bash
# Debian 12 packages the tests use: QEMU 7.2 (with the C virtiofsd), the kernel
# source and its build tools, containerd and runc, busybox for guest and image.
set -euo pipefail
packages=(
	qemu-system-x86 qemu-system-common qemu-utils
	linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev dwarves cpio kmod
	xz-utils zstd lz4 bzip2 lzop binutils file
	containerd runc busybox-static
	hyperfine
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
