//! Shared between the groundzero XDP program (kernel, `no_std`) and user space.
//!
//! Everything that both sides must agree on lives here, exactly once:
//! - [`lists`]: the list vocabulary (side, family, exact or prefix, which map);
//! - [`maps`]: map names and the `#[repr(C)]` keys and values stored in them;
//! - [`reason`]: why a packet got its verdict, which doubles as the counter index;
//! - [`parse`]: the packet parser, generic over how bytes are read, so the kernel and the
//!   host model run the same parsing code;
//! - [`verdict`]: the decision rules as a pure function over parsed fields and list lookups;
//! - [`ratelimit`]: the per-source token bucket behind rate-based auto-bans;
//! - [`summary`]: the prefix and exact summaries that let the verdict skip trie walks and hash
//!   lookups that cannot match;
//! - [`slots`]: the exact lists' slot tables, which answer an exact lookup without a call;
//! - [`journey`]: what the tracing programs report about sampled packets;
//! - [`capture`]: the capture filter, its rate bucket and the captured packets' metadata.
#![no_std]

pub mod capture;
pub mod journey;
pub mod lists;
pub mod maps;
pub mod parse;
pub mod ratelimit;
pub mod reason;
pub mod slots;
pub mod summary;
pub mod verdict;

pub use parse::{parse, PacketBytes, Parsed};
pub use reason::{Action, Reason};
pub use verdict::{decide, Lists};
