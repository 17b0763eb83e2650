//! Background tasks: each loops until the daemon shuts down.

pub mod crowdsec;
pub mod rate_bans;
