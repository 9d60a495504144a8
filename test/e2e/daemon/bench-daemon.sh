#!/usr/bin/env bash
# make bench-daemon: run TestBenchDaemon (our daemon vs Rust virtiofsd vs the
# C virtiofsd, one TCG guest each, same run) and put its table in
# BENCHMARKS.md under "## virtio-fs daemon", replacing that section only.
set -euo pipefail
cd "$(dirname "$0")/../../.."
load=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
KSG_BENCH_ROUNDS=${KSG_BENCH_ROUNDS:-3} KSG_BENCH_DAEMON=1 KSG_BENCH_OUT="$out" go test -count=1 -timeout 90m -v \
	-run '^TestBenchDaemon$' ./test/e2e/daemon/
section="## virtio-fs daemon"
{
	echo "$section"
	echo
	echo "\`make bench-daemon\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) cores, load average $load at the start: TCG guests are CPU-bound, so other work on the machine moves single rounds by up to 3×):"
	echo
	cat "$out"
	echo
} >"$out.section"
touch BENCHMARKS.md
awk -v section="$section" -v file="$out.section" '
	BEGIN { while ((getline l < file) > 0) body = body l "\n" }
	$0 == section { skip = 1; if (!done) { printf "%s", body; done = 1 }; next }
	skip && /^## / { skip = 0 }
	!skip { print }
	END { if (!done) { if (NR) print ""; printf "%s", body } }
' BENCHMARKS.md >"$out.new"
mv "$out.new" BENCHMARKS.md
rm -f "$out.section"
echo "BENCHMARKS.md: $section updated"
