//! Background tasks: each loops until the daemon shuts down.

pub mod expiry;
pub mod feeds;
pub mod guard;
pub mod journey;
pub mod rate_bans;
mod ring;
