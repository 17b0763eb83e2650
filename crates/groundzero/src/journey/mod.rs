//! Journeys: sampled packets followed from the XDP hook to the application, measured.
//!
//! - [`btf`] reads the `sk_buff` offsets and drop-reason names from the running kernel;
//! - [`tracer`] attaches the observer programs and switches sampling on and off;
//! - [`assemble`] turns the kernel's per-stage events into whole journeys (pure, host-tested);
//! - [`stats`] keeps per-stage latencies, outcomes and recent journeys for the API, the page,
//!   the terminal and Prometheus.

pub mod assemble;
pub mod btf;
pub mod kallsyms;
pub mod stats;
pub mod tracer;

pub use assemble::{Assembler, Hop, Journey, Outcome, RecordedEntry};
pub use btf::KernelInfo;
pub use groundzero_common::journey::{FilteredCounts, FlowFilter, JourneyEvent, Stage};
pub use kallsyms::Kallsyms;
pub use stats::{JourneyStats, StageLatency};
pub use tracer::{parse_filter, JourneyEvents, MissingStage, TraceStatus};
