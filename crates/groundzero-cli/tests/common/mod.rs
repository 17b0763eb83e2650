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

/// `target/<profile>/validator-node`, built first if `cargo test -p groundzero-cli` did not (a
/// workspace test run builds it anyway).
pub fn validator_node_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .to_path_buf();
    let bin = profile_dir.join("validator-node");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "validator-node"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .expect("running cargo to build validator-node");
    assert!(status.success(), "building validator-node failed");
    assert!(bin.exists(), "{} is missing after the build", bin.display());
    bin
}

pub mod child;
pub mod daemon;
pub mod state;
pub mod topology;
