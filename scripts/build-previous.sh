#!/usr/bin/env bash
# Builds the `groundzero` binary of an older commit (default e477daf, the last one whose pins
# carry no layout stamp: map layout 1) for the layout-migration tests, in a git worktree with a
# target directory of its own, and copies it to target/previous/<commit>/groundzero.
# Idempotent: does nothing if that binary is already there. A debug build of only
# groundzero-cli keeps the cost down (its eBPF object is still built in release, by build.rs).
#
#   scripts/build-previous.sh             build e477daf (what the tests use)
#   scripts/build-previous.sh <commit>    build another commit (to try a migration by hand)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

commit="${1:-e477daf}"
root="$PWD/target/previous/$commit"
out="$root/groundzero"
if [ -x "$out" ]; then
    echo "$out (already built)"
    exit 0
fi
mkdir -p "$root"
src="$root/src"
if [ ! -e "$src/.git" ]; then
    # A stale registration (its directory removed by hand) would make `worktree add` refuse.
    git worktree prune
    git worktree add --detach --force "$src" "$commit" >&2
fi
start=$(date +%s)
# Its own target dir: the outer build's artifacts are of another commit (and the BPF object
# of build.rs goes to <target>/bpf, so this one's cannot clobber the current build's).
(cd "$src" && cargo build --locked -p groundzero-cli --target-dir "$root/target" >&2)
cp "$root/target/debug/groundzero" "$out.tmp"
mv "$out.tmp" "$out"
echo "built $commit in $(($(date +%s) - start)) s" >&2
echo "$out"
