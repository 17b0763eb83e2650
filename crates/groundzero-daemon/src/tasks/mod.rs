//! Background tasks: each loops until the daemon shuts down ([`crate::stop::Stop`]), finishing
//! the step it is in (a journal write, a feed refresh, a compaction) before it returns.

pub mod crowdsec;
pub mod crowdsec_push;
pub mod expiry;
pub mod feeds;
pub mod guard;
pub mod journey;
pub mod rate_bans;
mod ring;
