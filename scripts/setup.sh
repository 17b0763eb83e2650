#!/usr/bin/env bash
# Installs everything groundzero needs to build and test on a fresh Debian machine of this kind.
# Idempotent: every step checks first, so a second run is a fast no-op.
# Recipe: ../shared/docs/toolchain.md (Debian's rustc-web for the BPF target, bpf-linker against LLVM 22).
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh installs Debian packages and must run as root (try: sudo $0)" >&2
  exit 1
fi

# Debian packages. Each line says why it is here.
PKGS=(
  rustc-web                 # /usr/bin/rustc 1.96 (LLVM 22): the only compiler here with a BPF core
  libstd-rust-web-dev-bpf   # prebuilt core/alloc for bpfel-unknown-none, so no -Z build-std
  llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev libxml2-dev   # to build bpf-linker against LLVM 22
  iproute2                  # ip netns / veth for the test hosts
  xdp-tools                 # xdp-filter: the reference we benchmark against
  nftables iptables ipset   # benchmark peers
  libsqlite3-0              # the unpacked crowdsec binaries link it (CrowdSec section below)
  prometheus                # a real Prometheus server and promtool for the metrics tests
  fonts-dejavu-core         # DejaVu Sans: the text of the benchmark plots (docs/bench/*.png)
  chromium                  # the journey page's browser test (headless, driven by playwright-core)
  tshark                    # tests/replay.rs: captures namespace traffic (Ethernet, SLL, SLL2) and reads it back
  lintian man-db            # the Debian package's test: lintian, and `man -w` on the installed pages
  ansible ansible-lint      # the Ansible role's test (deploy/ansible): runs it here, lints it
  bpftool                   # `bpftool prog dump xlated/jited`: the verdict's instructions and calls (BENCHMARKS.md)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package starts a system service on :9090; our tests run their own instance.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
else
  log "Debian packages: all present"
fi

# bpf-linker built against Debian's LLVM 22 (the default feature wants LLVM 23, which Debian lacks).
BPF_LINKER_VERSION=0.13.0
if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "bpf-linker $BPF_LINKER_VERSION: present"
else
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about 2 minutes)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22 --quiet
fi

# CrowdSec 1.4.6 (Debian's crowdsec and crowdsec-firewall-bouncer), unpacked, never installed:
# the package's postinst registers with the central API (fails offline) and starts services that
# talk to the internet. The tests run their own LAPI-only crowdsec from these binaries with a
# config of their own (crates/groundzero-lab/src/crowdsec.rs); the benchmark runs the firewall
# bouncer from here too. No crowdsec service is installed or started.
CROWDSEC_ROOT=/var/lib/groundzero-ci/crowdsec
CROWDSEC_PKGS=(crowdsec crowdsec-firewall-bouncer)
if [ -f "$CROWDSEC_ROOT/.unpacked" ] && [ -x "$CROWDSEC_ROOT/usr/bin/crowdsec" ] \
   && [ -x "$CROWDSEC_ROOT/usr/bin/cscli" ] && [ -x "$CROWDSEC_ROOT/usr/bin/crowdsec-firewall-bouncer" ]; then
  log "crowdsec: unpacked in $CROWDSEC_ROOT ($(tr '\n' ' ' < "$CROWDSEC_ROOT/.unpacked"))"
else
  log "crowdsec: unpacking ${CROWDSEC_PKGS[*]} into $CROWDSEC_ROOT (apt-get download + dpkg-deb -x)"
  debs="$(mktemp -d)"
  trap 'rm -rf "$debs"' EXIT
  # _apt downloads into a directory it can write; prefer what apt already has cached.
  chmod 755 "$debs"
  chown _apt "$debs" 2>/dev/null || true
  for p in "${CROWDSEC_PKGS[@]}"; do
    cached="$(ls /var/cache/apt/archives/"${p}"_*.deb 2>/dev/null | head -n1 || true)"
    if [ -n "$cached" ]; then
      cp "$cached" "$debs/"
    elif ! (cd "$debs" && apt-get download -qq "$p" >/dev/null 2>&1); then
      apt-get update -qq
      (cd "$debs" && apt-get download -qq "$p" >/dev/null)
    fi
  done
  rm -rf "$CROWDSEC_ROOT.new"
  mkdir -p "$CROWDSEC_ROOT.new"
  : > "$CROWDSEC_ROOT.new/.unpacked.tmp"
  for deb in "$debs"/*.deb; do
    dpkg-deb -x "$deb" "$CROWDSEC_ROOT.new"
    dpkg-deb -W --showformat '${Package}=${Version}\n' "$deb" >> "$CROWDSEC_ROOT.new/.unpacked.tmp"
  done
  mv "$CROWDSEC_ROOT.new/.unpacked.tmp" "$CROWDSEC_ROOT.new/.unpacked"
  rm -rf "$CROWDSEC_ROOT"
  mv "$CROWDSEC_ROOT.new" "$CROWDSEC_ROOT"
  rm -rf "$debs"
  trap - EXIT
  "$CROWDSEC_ROOT/usr/bin/crowdsec" -version 2>&1 | grep -q 'v1\.4\.' \
    || { echo "setup.sh: unpacked crowdsec does not run" >&2; exit 1; }
fi

# cargo-deb builds the Debian package (packaging/deb/build.sh, tests/package.rs).
CARGO_DEB_VERSION=3.8.0
if command -v cargo-deb >/dev/null && cargo-deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "cargo-deb $CARGO_DEB_VERSION: present"
else
  log "building cargo-deb $CARGO_DEB_VERSION (about 2 minutes)"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" --quiet
fi

# bpffs and tracefs: not mounted by default on this kernel; pinning and tracepoints need them.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true

# playwright-core for the browser test, pinned by its lock file (it drives Debian's chromium;
# it never downloads a browser of its own).
# Node.js and npm come with the machine (not Debian's older npm).
web_ui="$(dirname "$0")/../crates/groundzero-cli/tests/web_ui"
if [ ! -d "$web_ui/node_modules/playwright-core" ]; then
  command -v npm >/dev/null || { echo "setup.sh: npm is missing (needed for the browser test)" >&2; exit 1; }
  log "installing playwright-core for the browser test"
  (cd "$web_ui" && npm ci --no-audit --no-fund --silent)
fi

log "ready"
