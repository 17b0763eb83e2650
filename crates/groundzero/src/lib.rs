//! groundzero: drop traffic from blocked sources in XDP, before the kernel spends anything on it.
//!
//! - [`Shield`] loads the XDP verdict program, attaches it to interfaces, and edits its lists.
//! - [`entry`] parses addresses, prefixes and list files, with errors that name what is wrong.
//! - [`text`] checks free text (reasons, names) on the way in and escapes it for terminals.
//! - [`Counters`] is a snapshot of the per-reason packet and byte counters.
//! - [`model`] is the host-side twin of the kernel program (same parser, same rules), for tests,
//!   for explaining verdicts, and for the differential test against the kernel.
//! - [`craft`] builds test packets; [`netns`] makes throw-away network namespaces and veth pairs.
//! - [`bpf`] is the layer under [`Shield`]: the object, the typed map handles, attach, pins,
//!   and [`sys`], the few `bpf()` commands aya does not wrap (batches, link detach, raw fds).
//!
//! The library never initialises a logger, never exits the process and never builds an async
//! runtime: those belong to the binary.

pub mod bpf;
pub mod client;
pub mod counters;
pub mod craft;
pub mod daemon;
pub mod entry;
pub mod error;
pub mod journey;
pub mod lab;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod shield;
pub mod text;

pub use bpf::{list_reader, pins, ratelimit, sys};

pub use counters::Counters;
pub use entry::{parse_address, parse_entry, parse_list, EntryError, ListFileError};
pub use error::{Error, ListKind};
pub use groundzero_common::lists;
pub use groundzero_common::{Action, Reason};
pub use ipnet::IpNet;
pub use shield::{
    ActiveMode, AttachMode, Attachment, ListEntry, ProgramStats, Shield, ShieldOptions,
};
