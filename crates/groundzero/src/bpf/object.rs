//! The XDP object, built by build.rs from crates/groundzero-ebpf and embedded in the binary.

/// `include_bytes_aligned!`: aya parses the ELF in place and needs it 8-byte aligned.
pub(crate) static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/groundzero.bpf.o"));
