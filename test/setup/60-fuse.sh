#!/usr/bin/env bash
# /dev/fuse for the passthroughfs tests, which mount the filesystem through
# the kernel's FUSE client (as root, without fusermount). Debian builds FUSE
# as a module; load it if the device is missing.
set -euo pipefail
if [[ -c /dev/fuse ]]; then
	exit 0
fi
modprobe fuse 2>/dev/null || true
if [[ ! -c /dev/fuse ]] && grep -qw fuse /proc/filesystems; then
	mknod -m 0666 /dev/fuse c 10 229
fi
[[ -c /dev/fuse ]] || { echo "60-fuse.sh: no /dev/fuse: load the fuse module (modprobe fuse)" >&2; exit 1; }
echo "/dev/fuse ready"
