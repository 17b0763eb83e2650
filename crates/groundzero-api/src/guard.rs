//! The lockout guard as the API shows it (`GET /v1/guard`).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::source::SourceKind;

/// A management address the guard protects, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedAddress {
    /// The address, as a /32 or /128.
    pub entry: IpNet,
    /// What it is (`an address of this host`, `the peer of an established SSH session`, ...).
    pub why: String,
}

/// The reply to `GET /v1/guard`: what the guard protects right now, and what it refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardReply {
    /// Entries on the allowlist (every allowlisted prefix is protected too).
    pub allowlist_entries: u64,
    /// `guard.protected` from the config.
    pub configured: Vec<IpNet>,
    /// Why the management addresses could not be read: then every block is refused.
    pub error: Option<String>,
    /// The management addresses read last (empty without `protect_management`).
    pub management: Vec<ProtectedAddress>,
    /// `guard.protect_management`.
    pub protect_management: bool,
    /// What the XDP rate limit never counts (configured, protected and management), sorted.
    pub rate_exempt: Vec<IpNet>,
    /// Seconds since the management addresses were last read.
    pub read_seconds_ago: Option<f64>,
    /// Blocks the guard refused since the daemon started, by kind of source.
    pub refusals: BTreeMap<SourceKind, u64>,
    /// The SSH port whose established peers are protected.
    pub ssh_port: u16,
    /// IPv4 prefixes wider than this are refused unless forced.
    pub widest_v4: u8,
    /// IPv6 prefixes wider than this are refused unless forced.
    pub widest_v6: u8,
}
