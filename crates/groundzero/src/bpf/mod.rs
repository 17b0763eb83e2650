//! The kernel-facing layer under [`Shield`](crate::Shield): the eBPF object and one typed
//! handle per group of maps, each owning its maps (taken out of the object at load). Nothing
//! here knows the `Shield`; it owns these and delegates to them.
//!
//! - `object`: the embedded object, loading it, its programs and untaken maps;
//! - `keys`: map keys per address family, and the one family dispatch;
//! - `list_maps`: the six list maps, with the family × kind × shape dispatch written once;
//! - `lists`: list edits (one by one, or all-or-nothing in batches) with the summaries counted;
//! - [`list_reader`]: read-only list handles of their own;
//! - `summary`: the prefix and exact summaries, mapped into this process;
//! - `slots`: the exact lists' slot tables (an index of the hashes the program reads inline);
//! - `config`: the config map (monitor mode, rate-limit settings, sampling);
//! - [`ratelimit`]: exempt prefixes, buckets and the over-limit reports;
//! - `counters`: the per-reason counter maps;
//! - `attach` and [`mode`]: attaching to interfaces; [`pins`]: bpffs pins;
//! - [`capture`]: packet capture (filter, perf buffers, the capture bit);
//! - [`layout`]: the pin directory's map-layout stamp; `migrate`: moving older pins to it;
//! - `batch` and [`sys`]: the `bpf()` commands aya does not wrap.

pub(crate) mod attach;
pub(crate) mod batch;
pub mod capture;
pub(crate) mod config;
pub(crate) mod counters;
pub(crate) mod keys;
pub mod layout;
pub(crate) mod list_maps;
pub mod list_reader;
pub(crate) mod lists;
pub(crate) mod migrate;
pub mod mode;
pub(crate) mod object;
pub mod pins;
pub mod ratelimit;
pub(crate) mod slots;
pub(crate) mod summary;
pub mod sys;

pub use attach::Attachment;
pub use list_maps::ListEntry;
pub use mode::{ActiveMode, AttachMode};
pub use object::{ProgramStats, ShieldOptions};
