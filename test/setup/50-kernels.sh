#!/usr/bin/env bash
# Guest kernels for the e2e suite and the kernel-inspection tests: built once
# per input (source package version + patch + fragment + build script) into
# $KSG_CACHE/kernels/<key>; a no-op when that key is already built.
set -euo pipefail
exec "$(dirname "$0")/../kernels/build.sh"
