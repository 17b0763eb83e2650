//! Builds the eBPF crate (crates/groundzero-ebpf) for bpfel-unknown-none and puts the object in
//! OUT_DIR, where src/program.rs embeds it.
//!
//! Recipe from ../shared/docs/toolchain.md: Debian's rustc (which ships a prebuilt BPF `core`),
//! RUSTC_BOOTSTRAP for aya-ebpf's nightly features, bpf-linker with `--btf`. The nested cargo gets
//! its own target dir, or it would wait forever on the outer build's lock.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const SETUP_HINT: &str = "run `sudo scripts/setup.sh` from the repository root to install it";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let crates = manifest_dir.parent().unwrap();
    let ebpf_dir = crates.join("groundzero-ebpf");
    let common_dir = crates.join("groundzero-common");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=GROUNDZERO_BPF_RUSTC");

    let bpf_rustc = env::var("GROUNDZERO_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if !Path::new(&bpf_rustc).exists() {
        fail(&format!(
            "the BPF compiler {bpf_rustc} (Debian's rustc-web) is missing: {SETUP_HINT}"
        ));
    }
    if which("bpf-linker").is_none() {
        fail(&format!("bpf-linker is not on PATH: {SETUP_HINT}"));
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: share one BPF target dir across profiles so
    // that `cargo test`, `cargo build --release` and clippy do not each rebuild it.
    let target_root = out_dir.ancestors().nth(4).unwrap_or(&out_dir).to_path_buf();
    let bpf_target_dir = target_root.join("bpf");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--locked",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&bpf_target_dir)
        .env("RUSTC", &bpf_rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        // Misaligned loads: packet fields are not naturally aligned, and without this LLVM
        // splits every multi-byte packet read into single bytes (an IPv6 address became a call
        // to a byte-wise memmove). x86-64 and arm64 kernels accept misaligned packet access;
        // the verifier still insists on aligned *stack* access, which is why
        // `groundzero_common::Parsed` is `repr(C)` (it puts the addresses on aligned offsets).
        .env(
            "RUSTFLAGS",
            "-C link-arg=--btf -C link-arg=--cpu-features=+allows-misaligned-mem-access",
        );
    // What the outer build set for itself must not leak into the BPF build (clippy's wrapper,
    // host rustflags, a target dir or target triple).
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTDOCFLAGS",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run cargo for the eBPF crate: {e}")));
    if !status.success() {
        fail(&format!(
            "building the eBPF crate failed ({status}); see the compiler output above. \
             If the toolchain is missing or stale, {SETUP_HINT}"
        ));
    }
    let objects = bpf_target_dir.join("bpfel-unknown-none/release");
    // The crate's other programs (the benchmark's reference and pieces) stay there; the bench
    // finds them through this.
    println!(
        "cargo:rustc-env=GROUNDZERO_BPF_OBJECTS={}",
        objects.display()
    );
    let object = objects.join("groundzero");
    std::fs::copy(&object, out_dir.join("groundzero.bpf.o"))
        .unwrap_or_else(|e| fail(&format!("copying {}: {e}", object.display())));
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn fail(message: &str) -> ! {
    eprintln!("\n\ngroundzero: {message}\n");
    println!("cargo:warning=groundzero: {message}");
    std::process::exit(1);
}
