//! [`MetricsSnapshot`]: everything `/metrics` shows, as plain data read from the maps at one
//! moment (at scrape time), and what a [`Shield`] alone can fill in.

pub use groundzero::lists::{Family, Side};
use std::{collections::HashMap, time::Duration};

use groundzero_common::maps::interface_slot;
use ipnet::IpNet;

use groundzero::{
    counters::Counters,
    error::{Error, ListKind},
    shield::{ActiveMode, ListEntry, ProgramStats, Shield},
};

use crate::records::FeedStatus;

/// How many blocked entries `groundzero_top_blocked_hits_total` shows by default.
pub const DEFAULT_TOP_N: usize = 10;
/// The most blocked entries [`encode`] ever emits, whatever the snapshot holds: a hard bound on
/// the label cardinality of `groundzero_top_blocked_hits_total`.
pub const MAX_TOP_N: usize = 100;
/// Everything `/metrics` shows, as plain data read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Attached (or meant to be attached) interfaces, with their own counters.
    pub interfaces: Vec<InterfaceSnapshot>,
    /// The program's counters over every interface together (and `BPF_PROG_TEST_RUN` runs).
    pub totals: Counters,
    /// Monitor (dry-run) mode is on.
    pub monitor: bool,
    /// List entries by list, address family and source.
    pub lists: Vec<ListCount>,
    /// Fill and capacity of each kernel map.
    pub maps: Vec<MapFill>,
    /// Inserts refused because a map was full.
    pub failed_inserts: u64,
    /// The kernel's run-time accounting of the XDP program (zero unless run stats are on).
    pub program: ProgramStats,
    /// Blocklist feeds and how their last refresh went.
    pub feeds: Vec<FeedMetrics>,
    /// The CrowdSec bouncer and watcher, when `[crowdsec]` is configured (daemon only).
    pub crowdsec: Option<CrowdsecMetrics>,
    /// Blocks the lockout guard refused, by the kind of source that asked (daemon only).
    pub guard_refusals: Vec<(String, u64)>,
    /// Damaged journal ranges moved aside at start-up (daemon only).
    pub journal_damage: u64,
    /// The most-hit blocked entries, most hits first (see [`top_blocked`]).
    pub top_blocked: Vec<BlockedSource>,
    /// Packets dropped by blocked entries, summed by each entry's holder (`feed:<name>`,
    /// `auto-ban`, `app:<name>`, `api`, ...; `manual` without a daemon): the entries' own hit
    /// counters added up at scrape time, so it costs the packet path nothing.
    pub drops_by_origin: Vec<(String, u64)>,
    /// Per-stage latency histograms of sampled journeys (the daemon, with tracing on).
    pub journey: Option<JourneyHistograms>,
}

/// `groundzero_journey_stage_seconds{stage}`: live histograms owned by the journey statistics.
#[derive(Clone, Debug)]
pub struct JourneyHistograms(
    pub  prometheus_client::metrics::family::Family<
        groundzero::journey::stats::StageLabel,
        prometheus_client::metrics::histogram::Histogram,
    >,
);

impl PartialEq for JourneyHistograms {
    /// Snapshots compare by the values read from the maps; live histograms are not part of it.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One interface: where it is attached, how, and what its traffic was.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceSnapshot {
    /// Interface name; the `interface` label.
    pub name: String,
    /// Index in the network namespace it was attached in (not a label: indexes are per
    /// namespace and change when interfaces are re-created).
    pub ifindex: u32,
    /// The mode it got; `None` if it is not attached.
    pub mode: Option<ActiveMode>,
    pub attached: bool,
    /// Its counters; `None` when they cannot be told apart from another interface's (two
    /// interfaces sharing one counter slot, see [`MetricsSnapshot::from_shield`]).
    pub counters: Option<Counters>,
}

/// Entries of one list and family that came from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCount {
    pub list: Side,
    pub family: Family,
    /// Where the entries came from: `manual` for the CLI; the daemon uses a bounded set such as
    /// `api`, `feed:<name>`, `auto-ban`, `application`. Never an address or anything per entry.
    pub source: String,
    pub entries: u64,
}

/// Fill of one kernel map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: ListKind,
    pub family: Family,
    pub entries: u64,
    pub capacity: u64,
}

/// One blocklist feed (or import): its status as the registry keeps it, and its schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedMetrics {
    /// Name, entries, last success, last error and refusals.
    pub status: FeedStatus,
    /// How often the feed is meant to be refreshed, if on a schedule (alerts call a feed stale
    /// after a few missed refreshes).
    pub refresh_interval: Option<Duration>,
}

/// The CrowdSec bouncer: its status as `GET /v1/crowdsec` shows it, and its pull interval.
#[derive(Clone, Debug, PartialEq)]
pub struct CrowdsecMetrics {
    /// Decisions by source and scope, pulls, errors, last success.
    pub status: groundzero_api::crowdsec::CrowdsecReply,
    /// How often it pulls (alerts call it stale after a few missed pulls); None when only
    /// `[crowdsec.push]` is configured (the pull metrics are left out then).
    pub pull_interval: Option<Duration>,
}

/// A blocked address or prefix and how many packets it matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedSource {
    pub net: IpNet,
    pub hits: u64,
}

impl MetricsSnapshot {
    /// Reads everything a [`Shield`] knows: attachments and their counters, totals, list and map
    /// fill (every entry under source `manual`), failed inserts, the program's run-time stats
    /// (enable them with [`Shield::enable_run_stats`]) and the `top_n` most-hit blocked entries
    /// (at most [`MAX_TOP_N`]).
    ///
    /// The XDP program counts per interface in a slot chosen by ifindex; interfaces with an
    /// ifindex of 256 or more share slot 0, and an ifindex is only unique within its network
    /// namespace. When two attached interfaces share a slot, neither gets per-interface counters
    /// (their traffic still shows in the totals) rather than both showing the sum.
    pub fn from_shield(shield: &Shield, top_n: usize) -> Result<Self, Error> {
        let (blocked, allowed) = (shield.blocked()?, shield.allowed()?);
        Self::from_shield_and_lists(shield, &blocked, &allowed, top_n)
    }

    /// [`MetricsSnapshot::from_shield`] with the list entries read beforehand, for example
    /// through a [`ListReader`](crate::list_reader::ListReader) while no lock is held: reading a
    /// million entries takes about a second, everything else here a few milliseconds.
    pub fn from_shield_and_lists(
        shield: &Shield,
        blocked: &[ListEntry],
        allowed: &[ListEntry],
        top_n: usize,
    ) -> Result<Self, Error> {
        let attachments = shield.attachments();
        let mut per_slot: HashMap<u32, usize> = HashMap::new();
        for a in attachments {
            *per_slot.entry(interface_slot(a.ifindex)).or_default() += 1;
        }
        let mut interfaces = Vec::with_capacity(attachments.len());
        for a in attachments {
            let shared = per_slot[&interface_slot(a.ifindex)] > 1;
            interfaces.push(InterfaceSnapshot {
                name: a.interface.clone(),
                ifindex: a.ifindex,
                mode: Some(a.mode),
                attached: true,
                counters: if shared {
                    None
                } else {
                    Some(shield.interface_counters(a.ifindex)?)
                },
            });
        }

        let options = shield.options();
        let families = [Family::V4, Family::V6];
        let mut lists = Vec::new();
        let mut maps = Vec::new();
        for family in families {
            let count = |entries: &[ListEntry], map: Option<ListKind>| {
                entries
                    .iter()
                    .filter(|e| Family::of(&e.net) == family)
                    .filter(|e| map.is_none_or(|m| block_map(&e.net) == m))
                    .count() as u64
            };
            lists.push(ListCount {
                list: Side::Block,
                family,
                source: "manual".to_string(),
                entries: count(blocked, None),
            });
            lists.push(ListCount {
                list: Side::Allow,
                family,
                source: "manual".to_string(),
                entries: count(allowed, None),
            });
            for (map, entries, capacity) in [
                (
                    ListKind::BlockExact,
                    count(blocked, Some(ListKind::BlockExact)),
                    options.exact_capacity,
                ),
                (
                    ListKind::BlockCidr,
                    count(blocked, Some(ListKind::BlockCidr)),
                    options.cidr_capacity,
                ),
                (
                    ListKind::Allow,
                    count(allowed, None),
                    options.allow_capacity,
                ),
            ] {
                maps.push(MapFill {
                    map,
                    family,
                    entries,
                    capacity: capacity.into(),
                });
            }
        }

        Ok(MetricsSnapshot {
            interfaces,
            totals: shield.counters()?,
            monitor: shield.monitor()?,
            lists,
            maps,
            failed_inserts: shield.failed_inserts(),
            program: shield.program_stats()?,
            feeds: Vec::new(),
            crowdsec: None,
            guard_refusals: Vec::new(),
            journal_damage: 0,
            top_blocked: top_blocked(blocked, top_n),
            // Without a registry every entry is the operator's.
            drops_by_origin: vec![("manual".to_string(), blocked.iter().map(|e| e.hits).sum())],
            journey: None,
        })
    }
}

/// The `n` (at most [`MAX_TOP_N`]) entries with the most hits, most first; ties by address.
/// Entries never hit are included while there is room, so a source's series exists (at 0)
/// before its first hit and `rate()` sees the first packets.
pub fn top_blocked(entries: &[ListEntry], n: usize) -> Vec<BlockedSource> {
    let n = n.min(MAX_TOP_N);
    let mut top: Vec<BlockedSource> = entries
        .iter()
        .map(|e| BlockedSource {
            net: e.net,
            hits: e.hits,
        })
        .collect();
    let order = |a: &BlockedSource, b: &BlockedSource| b.hits.cmp(&a.hits).then(a.net.cmp(&b.net));
    if top.len() > n {
        // O(entries) rather than sorting a blocklist of a million entries on every scrape.
        top.select_nth_unstable_by(n, order);
        top.truncate(n);
    }
    top.sort_by(order);
    top
}

/// The kernel map a blocked entry lives in: host entries in the exact hash, the rest in the trie.
fn block_map(net: &IpNet) -> ListKind {
    if net.prefix_len() == net.max_prefix_len() {
        ListKind::BlockExact
    } else {
        ListKind::BlockCidr
    }
}
