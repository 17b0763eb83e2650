#!/usr/bin/env bash
# Builds the Debian package: a release build of the `groundzero` binary, its man pages and
# shell completions (generated from the command line's clap definition), then `cargo deb`.
# Prints the .deb's path as its last line. Needs cargo-deb (scripts/setup.sh installs it).
#
#   packaging/deb/build.sh            build and package
#   GZ_DEB_NO_BUILD=1 packaging/...   package target/release/groundzero as it is
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

target="${CARGO_TARGET_DIR:-target}"
if [ -z "${GZ_DEB_NO_BUILD:-}" ]; then
    cargo build --release --locked -p groundzero-cli >&2
fi
# Generated files go to target/assets, not target/release: cargo-deb takes files under
# target/release for build output and would not compress the man pages there.
rm -rf target/assets
"$target/release/groundzero" generate-assets target/assets >&2
# --no-build: the binary above is the one packaged (cargo deb would rebuild the workspace's
# default members otherwise). --strip: the release profile keeps line tables (85 MB); the
# package ships the stripped binary (Debian Policy 10.1). Man pages are gzipped by cargo-deb.
cargo deb -p groundzero-cli --no-build --strip --locked --output "$target/debian/" 2>&1 >/dev/null | cat >&2
realpath "$(ls -t "$target"/debian/groundzero_*.deb | head -n 1)"
