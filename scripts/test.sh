#!/usr/bin/env bash
# Sets up everything a fresh machine needs, then runs every check and test. Run as root:
# the kernel tests load XDP programs and make network namespaces (CI runs this as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format"
cargo fmt --all --check
(cd crates/groundzero-ebpf && cargo fmt --check)
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked
