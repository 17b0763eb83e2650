#!/usr/bin/env bash
# Sets up everything a fresh machine needs (crowdsec 1.4.6 included: the demo's fourth phase
# shares bans between two nodes through a real CrowdSec LAPI), builds groundzero, and runs the
# demo in throw-away network namespaces (no real interface is touched). Run as root. Extra
# arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
exec ./target/release/groundzero demo "$@"
