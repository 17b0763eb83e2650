//! Shared by the integration tests that need the kernel (root).
#![allow(dead_code)]

use groundzero::{Shield, ShieldOptions};
// The lab's harness, shared with the CLI's system tests and the demo (each test binary uses a
// part of it).
#[allow(unused_imports)]
pub use groundzero_lab::harness::{recv_expected, require_root, wait_for};

/// A freshly loaded shield with default capacities.
pub fn shield() -> Shield {
    require_root();
    Shield::load(ShieldOptions::default()).unwrap_or_else(|e| panic!("loading the shield: {e:?}"))
}
