#!/usr/bin/env bash
# Dumps the verdict programs as the kernel runs them (`bpftool prog dump xlated`, after the
# verifier's inlining) and counts, per program: instructions, bytes of x86 code, and the calls
# left as real calls, by target. The programs are the ones groundzero-bench part 6 loads: the
# groundzero program with part 1's lists, xdp-filter, the minimal reference and the pieces.
# Debian's bpftool has no disassembler (no libbfd), so the JIT side is its size only.
#
#   sudo scripts/verdict-paths.sh [OUT_DIR]     (default target/verdict-paths)
#
# Needs a release build of groundzero-bench (`cargo build --release -p groundzero-bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/verdict-paths}"
bench=target/release/groundzero-bench
[ -x "$bench" ] || { echo "build it first: cargo build --release -p groundzero-bench" >&2; exit 1; }
command -v bpftool >/dev/null || { echo "bpftool is missing: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
# Part 6 with rounds enough to keep its programs loaded while we read them; SIGINT lets it
# remove its pins and namespaces.
"$bench" --parts 6 --rounds 1000000 --repeat 1000 --out "$work" >"$work/log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do
    grep -q "pieces round 1/" "$work/log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.2
done
grep -q "pieces round 1/" "$work/log" || { echo "the bench did not start measuring" >&2; exit 1; }

echo "| program | xlated instructions | JIT bytes | calls left (target × count) |"
echo "|---|---|---|---|"
# The kernel keeps 15 characters of a program's name; the dump's first line has the whole
# function name (from BTF), which tells the pieces' _v4 and _v6 programs apart.
bpftool prog show | awk '/^[0-9]+: xdp +name (groundzero_xdp|minimal|piece_[a-z0-9_]+|xdpfilt_alw_ip)/{
    id = $1; sub(":", "", id); print id }' |
while read -r id; do
    bpftool prog dump xlated id "$id" >"$work/$id.xlated"
    name=$(head -1 "$work/$id.xlated" | sed -E 's/^[a-z0-9_ ]+ \*?([A-Za-z0-9_]+)\(.*/\1/')
    [ -e "$out/$name.xlated" ] && continue
    mv "$work/$id.xlated" "$out/$name.xlated"
    insns=$(grep -cE '^ *[0-9]+: ' "$out/$name.xlated" || true)
    jited=$(bpftool prog show id "$id" | grep -oE 'jited [0-9]+B' | grep -oE '[0-9]+' || true)
    calls=$(grep -oE 'call [A-Za-z_0-9]+|call pc[+-][0-9]+#[A-Za-z_0-9]+' "$out/$name.xlated" |
        sed -E 's/call (pc[+-][0-9]+#)?//; s/bpf_prog_[0-9a-f]+_//' | sort | uniq -c |
        awk '{printf "%s%s × %s", sep, $2, $1; sep=", "}' || true)
    echo "| $name | $insns | $jited | ${calls:-none} |"
done
echo
echo "Dumps in $out/ (one .xlated per program)."
