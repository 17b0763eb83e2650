//! Journeys in the daemon: the statistics and live viewers are the [`JourneyHub`] ([`hub`]);
//! what needs the whole daemon (switching tracing with its shield, showing a journey with the
//! registry's entry that dropped it) is [`crate::journey_ops`]; the drain that fills the hub is
//! [`crate::tasks::journey`]; the handlers are [`crate::http::journey`].

pub mod history;
pub mod hub;
pub mod reach;

pub(crate) use hub::monotonic_ns;
pub use hub::{summary, summary_json, JourneyHub};
