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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
echo "== benchmark smoke"
cargo run -p groundzero-bench --release --locked -- --smoke --out "$(mktemp -d)"

# The last thing printed is the total over every test binary: cargo's own last line belongs
# to the doc tests, which have none, and would read as "ran no test".
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
