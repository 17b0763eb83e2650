//! Shared by the integration tests that need the kernel (root).
#![allow(dead_code)]

use groundzero::{Shield, ShieldOptions};

/// Fails loudly, rather than skipping, when not root: these tests need CAP_BPF and
/// CAP_NET_ADMIN, and CI runs them as root. A skipped kernel test would be a green lie.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads an XDP program and makes network namespaces: it needs root \
         (CI runs it as root; locally: sudo -E cargo test)"
    );
}

/// A freshly loaded shield with default capacities.
pub fn shield() -> Shield {
    require_root();
    Shield::load(ShieldOptions::default()).unwrap_or_else(|e| panic!("loading the shield: {e:?}"))
}

pub mod daemon;
pub mod topology;
