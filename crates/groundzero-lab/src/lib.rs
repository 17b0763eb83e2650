//! groundzero's lab: everything to run groundzero against real traffic on one machine.
//!
//! - [`netns`] makes throw-away network namespaces and veth pairs; [`craft`] builds test packets;
//!   [`capture_file`] reads pcap/pcapng files as the Ethernet frames the program sees.
//!
//! A lab on one machine: a protected node, legitimate peers and attackers in network namespaces
//! ([`topology`]), traffic generators that measure what legitimate peers get and attack in
//! bounded ways ([`traffic`], [`scenario`]), and the small peer protocol the example validator
//! node serves ([`peer_protocol`]). `groundzero lab`, `groundzero demo` and the flood test are
//! built on it, and on the [`harness`] they share (supervised child processes, daemon configs,
//! waiting, the raw API exchange, the pinned maps' reader).
//!
//! Two nodes sharing bans through a real CrowdSec LAPI: [`fleet`].
//!
//! Everything stays in namespaces named `gz-lab-*`, addressed from 198.18.0.0/15 and
//! 2001:2::/48; [`topology::down`] removes it all, also after a crash.

pub mod ab;
pub mod capture_file;
pub mod craft;
pub mod crowdsec;
pub mod fleet;
pub mod harness;
pub mod netns;
pub mod peer_protocol;
pub mod raw;
pub mod scenario;
pub mod topology;
pub mod traffic;
pub mod watch;

pub use scenario::{run_phase, PhasePlan, PhaseReport};
pub use topology::{down, status, Lab, LabError, LabSpec, LabState};
