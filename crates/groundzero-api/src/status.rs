//! The daemon as a whole: `GET /v1/health`, `PUT /v1/monitor`, `GET /v1/stats`.

use serde::{Deserialize, Serialize};

use crate::{
    counters::ReasonCounters,
    lists::{Family, Side},
    source::SourceKind,
};

/// The reply to `GET /v1/health`: `{"status": "ok"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// Always `ok`: a daemon that answers is healthy.
    pub status: String,
}

impl HealthReply {
    /// The only answer there is.
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// `PUT /v1/monitor`: monitor (dry-run) mode on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorRequest {
    /// On: nothing is dropped; matches are counted as `monitor_*`.
    pub enabled: bool,
}

/// The reply to `PUT /v1/monitor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorReply {
    /// Monitor mode as it is now.
    pub monitor: bool,
}

crate::labels::label_enum! {
    /// The XDP mode an attachment actually got.
    pub enum XdpMode as "XDP mode" {
        /// In the driver.
        Native => "native",
        /// Generic (skb) mode.
        Generic => "generic",
    }
}

/// The sizes of the list maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// The allowlist (each family).
    pub allow: u32,
    /// Blocked prefixes (each family).
    pub cidr: u32,
    /// Blocked single addresses (each family).
    pub exact: u32,
}

/// One interface the XDP program is attached to, with its own counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    /// The attachment was taken over from an earlier daemon (no gap in filtering).
    pub adopted: bool,
    /// What the program counted on this interface.
    pub counters: ReasonCounters,
    /// The interface's index.
    pub ifindex: u32,
    /// Its name.
    pub interface: String,
    /// The mode it got.
    pub mode: XdpMode,
}

/// How many entries one kind of source holds on one list, in one family. An entry with two
/// holders counts under both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCount {
    /// The number of entries.
    pub entries: u64,
    /// Their family (`ipv4` or `ipv6`).
    #[serde(with = "crate::labels::family")]
    pub family: Family,
    /// Their list.
    pub list: Side,
    /// The kind of source holding them.
    pub source: SourceKind,
}

/// Drops by the blocked entries one origin holds: the sum of those entries' hit counters (an
/// entry two origins hold counts for both; in monitor mode, the packets they would drop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginDrops {
    /// The holder's source: `feed:<name>`, `auto-ban`, `app:<name>`, `api`, `manual`, ...
    pub origin: String,
    /// Packets matched by its entries.
    pub packets: u64,
}

/// The reply to `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The list maps' sizes.
    pub capacity: Capacity,
    /// What the XDP program counted, over every interface.
    pub counters: ReasonCounters,
    /// The CrowdSec bouncer and watcher; absent when `[crowdsec]` is not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<crate::crowdsec::CrowdsecSummary>,
    /// Packets dropped by the blocked entries each origin holds, most first (absent from a
    /// daemon older than this field).
    #[serde(default)]
    pub drops_by_origin: Vec<OriginDrops>,
    /// List sizes by list, kind of source and family.
    pub entries: Vec<ListCount>,
    /// Map inserts the kernel refused since start.
    pub failed_inserts: u64,
    /// Each attachment.
    pub interfaces: Vec<InterfaceStats>,
    /// Monitor mode is on.
    pub monitor: bool,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
}
