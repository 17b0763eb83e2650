//! groundzero's HTTP API as Rust: the wire types the daemon sends and the clients read, and
//! ([`client`], feature `client`) the client for the daemon's Unix socket or TCP listener.

#[cfg(feature = "client")]
pub mod client;
