//! Shared by the integration tests that need the kernel (root). What the demo needs too lives in
//! `groundzero_lab::harness`; what is here needs the daemon's crate or the `groundzero` binary's
//! path, or is particular to these tests.
#![allow(dead_code)]

use groundzero::{Shield, ShieldOptions};
// The lab's harness, shared with the library's tests and the demo (each test binary uses a
// part of it).
#[allow(unused_imports)]
pub use groundzero_lab::harness::{recv_expected, require_root, wait_for};

/// A freshly loaded shield with default capacities.
pub fn shield() -> Shield {
    require_root();
    Shield::load(ShieldOptions::default()).unwrap_or_else(|e| panic!("loading the shield: {e:?}"))
}

pub mod child;
pub mod daemon;
pub mod state;
pub mod topology;
