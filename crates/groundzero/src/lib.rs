//! groundzero: drop traffic from blocked sources in XDP, before the kernel spends anything on it.
//!
//! - [`Shield`] loads the XDP verdict program, attaches it to interfaces, and edits its lists.
//! - [`entry`] parses addresses, prefixes and list files, with errors that name what is wrong.
//! - [`text`] checks free text (reasons, names) on the way in and escapes it for terminals.
//! - [`Counters`] is a snapshot of the per-reason packet and byte counters.
//! - [`model`] is the host-side twin of the kernel program (same parser, same rules), for tests,
//!   for explaining verdicts, and for the differential test against the kernel.
//! - [`guard`] is the one check every block passes: it refuses blocks that would cut off the host's
//!   owner (protected and allowlisted prefixes, the host's own and management addresses).
//! - [`bpf`] is the layer under [`Shield`]: the object, the typed map handles, attach, pins,
//!   and [`sys`], the few `bpf()` commands aya does not wrap (batches, link detach, raw fds).
//! - [`lists`] is the list vocabulary (side, family, exact or prefix, which map), from
//!   groundzero-common.
//!
//! The library never initialises a logger, never exits the process and never builds an async
//! runtime: those belong to the binary.

pub mod bpf;
pub mod counters;
pub mod entry;
pub mod error;
pub mod guard;
pub mod journey;
pub mod model;
pub mod shield;
pub mod text;

pub use bpf::{capture, list_reader, pins, ratelimit, sys};

pub use counters::Counters;
pub use entry::{parse_address, parse_entry, parse_list, EntryError, ListFileError};
pub use error::{Error, ListKind};
pub use groundzero_common::lists;
pub use groundzero_common::{Action, Reason};
pub use ipnet::IpNet;
pub use shield::{
    ActiveMode, AttachMode, Attachment, ListEntry, ProgramStats, Shield, ShieldOptions,
};

/// Where build.rs left the eBPF crate's objects: the groundzero program and the benchmark's
/// reference programs (`minimal`, `pieces`). Only meaningful on the machine that built this.
#[doc(hidden)]
pub const BPF_OBJECTS_DIR: &str = env!("GROUNDZERO_BPF_OBJECTS");
