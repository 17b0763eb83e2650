//! Prometheus metrics: a plain-data [`MetricsSnapshot`], its OpenMetrics text ([`encode`]) and
//! an HTTP `/metrics` endpoint ([`router`], [`serve`]).
//!
//! The exporter does not own the [`Shield`]: whoever does (the `attach` command, the daemon)
//! hands [`router`] a [`SnapshotProvider`], a function that reads the BPF maps at scrape time
//! and returns a snapshot. [`MetricsSnapshot::from_shield`] fills everything a [`Shield`] knows;
//! an owner with more to say (list sources, feeds) adds it to the snapshot before returning it.
//!
//! Every metric is named `groundzero_*`, in base units (seconds, bytes), counters end in
//! `_total`, and every label comes from a bounded set: interface names, reasons, list sides,
//! address families, list sources and feed names from the configuration, and at most
//! [`MAX_TOP_N`] blocked entries.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `groundzero_build_info` | info (gauge 1) | `version` |
//! | `groundzero_packets_total` | counter | `interface`, `verdict`, `reason` |
//! | `groundzero_bytes_total` | counter | `interface`, `verdict`, `reason` |
//! | `groundzero_program_packets_total` | counter | `verdict`, `reason` (every interface together) |
//! | `groundzero_program_bytes_total` | counter | `verdict`, `reason` |
//! | `groundzero_interface_attached` | gauge 0/1 | `interface`, `mode` (`native`, `generic`, `none`) |
//! | `groundzero_monitor_mode` | gauge 0/1 | |
//! | `groundzero_list_entries` | gauge | `list` (`block`, `allow`), `family`, `source` |
//! | `groundzero_map_entries` | gauge | `map` (`block_exact`, `block_cidr`, `allow`), `family` |
//! | `groundzero_map_max_entries` | gauge | `map`, `family` |
//! | `groundzero_failed_inserts_total` | counter | |
//! | `groundzero_xdp_run_time_seconds_total` | counter | (kernel BPF run-time stats) |
//! | `groundzero_xdp_runs_total` | counter | |
//! | `groundzero_feed_refresh_success` | gauge 0/1 | `feed` |
//! | `groundzero_feed_last_success_timestamp_seconds` | gauge | `feed` (0: never) |
//! | `groundzero_feed_refresh_interval_seconds` | gauge | `feed` (feeds on a schedule) |
//! | `groundzero_feed_entries` | gauge | `feed` |
//! | `groundzero_feed_refusals_total` | counter | `feed` (refreshes refused: bad line, guard, too large a change) |
//! | `groundzero_guard_refusals_total` | counter | `source` (`api`, `feed`, `auto-ban`, `app`, ...: blocks the lockout guard refused) |
//! | `groundzero_journal_damaged_ranges` | gauge | (damaged journal ranges moved aside at start-up) |
//! | `groundzero_top_blocked_hits_total` | counter | `entry` (the top N blocked entries by hits) |
//!
//! Seconds per packet of the XDP program: `rate(groundzero_xdp_run_time_seconds_total[1m]) /
//! rate(groundzero_xdp_runs_total[1m])`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use groundzero_common::{maps::interface_slot, Reason};
use ipnet::IpNet;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use groundzero::{
    counters::Counters,
    error::{Error, ListKind},
    shield::{ActiveMode, ListEntry, ProgramStats, Shield},
};

/// How many blocked entries `groundzero_top_blocked_hits_total` shows by default.
pub const DEFAULT_TOP_N: usize = 10;
/// The most blocked entries [`encode`] ever emits, whatever the snapshot holds: a hard bound on
/// the label cardinality of `groundzero_top_blocked_hits_total`.
pub const MAX_TOP_N: usize = 100;
/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads the BPF maps (and whatever else the owner of the [`Shield`] knows) at scrape time. Called
/// on a blocking thread, once per scrape.
pub type SnapshotProvider = Arc<dyn Fn() -> Result<MetricsSnapshot, Error> + Send + Sync>;

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
    pub feeds: Vec<FeedStatus>,
    /// Blocks the lockout guard refused, by the kind of source that asked (daemon only).
    pub guard_refusals: Vec<(String, u64)>,
    /// Damaged journal ranges moved aside at start-up (daemon only).
    pub journal_damage: u64,
    /// The most-hit blocked entries, most hits first (see [`top_blocked`]).
    pub top_blocked: Vec<BlockedSource>,
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

/// Which list an entry is on, as the user sees it (both blocklist maps are `block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListSide {
    Block,
    Allow,
}

impl ListSide {
    pub const fn label(self) -> &'static str {
        match self {
            ListSide::Block => "block",
            ListSide::Allow => "allow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => AddressFamily::Ipv4,
            IpNet::V6(_) => AddressFamily::Ipv6,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            AddressFamily::Ipv4 => "ipv4",
            AddressFamily::Ipv6 => "ipv6",
        }
    }
}

/// Entries of one list and family that came from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCount {
    pub list: ListSide,
    pub family: AddressFamily,
    /// Where the entries came from: `manual` for the CLI; the daemon uses a bounded set such as
    /// `api`, `feed:<name>`, `auto-ban`, `application`. Never an address or anything per entry.
    pub source: String,
    pub entries: u64,
}

/// Fill of one kernel map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: ListKind,
    pub family: AddressFamily,
    pub entries: u64,
    pub capacity: u64,
}

/// One blocklist feed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedStatus {
    /// The feed's name from the configuration (a bounded set).
    pub name: String,
    /// The last refresh succeeded.
    pub ok: bool,
    /// Unix time of the last successful refresh; `None` if it never succeeded.
    pub last_success_unix: Option<f64>,
    /// Entries the feed currently contributes.
    pub entries: u64,
    /// How often the feed is meant to be refreshed, if on a schedule (alerts call a feed stale
    /// after a few missed refreshes).
    pub refresh_interval_seconds: Option<f64>,
    /// Refreshes refused as a whole (a bad line, the guard, too large a change).
    pub refused: u64,
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
        let families = [AddressFamily::Ipv4, AddressFamily::Ipv6];
        let mut lists = Vec::new();
        let mut maps = Vec::new();
        for family in families {
            let count = |entries: &[ListEntry], map: Option<ListKind>| {
                entries
                    .iter()
                    .filter(|e| AddressFamily::of(&e.net) == family)
                    .filter(|e| map.is_none_or(|m| block_map(&e.net) == m))
                    .count() as u64
            };
            lists.push(ListCount {
                list: ListSide::Block,
                family,
                source: "manual".to_string(),
                entries: count(blocked, None),
            });
            lists.push(ListCount {
                list: ListSide::Allow,
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
            guard_refusals: Vec::new(),
            journal_damage: 0,
            top_blocked: top_blocked(blocked, top_n),
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

fn map_label(map: ListKind) -> &'static str {
    match map {
        ListKind::BlockExact => "block_exact",
        ListKind::BlockCidr => "block_cidr",
        ListKind::Allow => "allow",
    }
}

/// The snapshot in the OpenMetrics text format, ending in `# EOF`.
pub fn encode(snapshot: &MetricsSnapshot) -> String {
    // The values are read from the BPF maps at scrape time, so there is no long-lived state to
    // keep in prometheus-client's atomic metrics: a fresh registry per scrape with one
    // `Collector` that writes the snapshot is the simplest correct form. It also keeps the output
    // in a stable order (a `Family` is a hash map) and never keeps series of interfaces or
    // entries that are gone.
    let mut registry = Registry::with_prefix("groundzero");
    registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
    if let Some(h) = &snapshot.journey {
        registry.register(
            "journey_stage_seconds",
            "Time each stage of a sampled packet's journey took, from the stage before it",
            h.0.clone(),
        );
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

/// A label set, sorted by name then value so duplicates can be merged.
type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family: what [`Collector::encode`] writes for it.
struct Metric {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    series: BTreeMap<Labels, Value>,
}

impl Metric {
    fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Metric {
            name,
            help,
            unit: None,
            kind,
            series: BTreeMap::new(),
        }
    }

    fn seconds(mut self) -> Self {
        self.unit = Some(Unit::Seconds);
        self
    }

    /// Adds a series; a second series with the same labels is merged (counters add up, gauges
    /// keep the smaller value, so "attached" is 0 if any interface of that name is not).
    fn add(&mut self, labels: &[(&'static str, &str)], value: Value) {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, escape(v))).collect();
        let counter = matches!(self.kind, MetricType::Counter);
        self.series
            .entry(labels)
            .and_modify(|old| {
                *old = match (*old, value) {
                    (Value::Int(a), Value::Int(b)) if counter => Value::Int(a.saturating_add(b)),
                    (Value::Int(a), Value::Int(b)) => Value::Int(a.min(b)),
                    (a, b) if counter => Value::Float(a.as_f64() + b.as_f64()),
                    (a, b) => Value::Float(a.as_f64().min(b.as_f64())),
                }
            })
            .or_insert(value);
    }

    fn write(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if self.series.is_empty() {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        for (labels, value) in &self.series {
            if matches!(self.kind, MetricType::Info) {
                metric.encode_info(labels)?;
                continue;
            }
            // A label-less series is written without `{}`.
            if labels.is_empty() {
                write_value(&mut metric, &self.kind, *value)?;
            } else {
                write_value(&mut metric.encode_family(labels)?, &self.kind, *value)?;
            }
        }
        Ok(())
    }
}

fn write_value(series: &mut MetricEncoder, kind: &MetricType, value: Value) -> fmt::Result {
    match (kind, value) {
        (MetricType::Counter, Value::Int(v)) => {
            series.encode_counter::<NoLabelSet, _, u64>(&v, None)
        }
        (MetricType::Counter, Value::Float(v)) => {
            series.encode_counter::<NoLabelSet, _, f64>(&v, None)
        }
        (_, Value::Int(v)) => series.encode_gauge(&v),
        (_, Value::Float(v)) => series.encode_gauge(&v),
    }
}

impl Value {
    fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }
}

fn bool_value(b: bool) -> Value {
    Value::Int(b.into())
}

/// Escapes a label value for the text format (prometheus-client writes values as given).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for metric in metrics(&self.0) {
            metric.write(&mut encoder)?;
        }
        Ok(())
    }
}

/// Every metric family of a snapshot, in output order.
fn metrics(s: &MetricsSnapshot) -> Vec<Metric> {
    use MetricType::{Counter, Gauge, Info};

    let mut build = Metric::new("build", Info, "groundzero version.");
    build.add(&[("version", env!("CARGO_PKG_VERSION"))], Value::Int(1));

    let mut packets = Metric::new(
        "packets",
        Counter,
        "Packets the XDP program saw on an interface, by verdict and reason.",
    );
    let mut bytes = Metric::new(
        "bytes",
        Counter,
        "Bytes (whole frames) the XDP program saw on an interface, by verdict and reason.",
    );
    let mut attached = Metric::new(
        "interface_attached",
        Gauge,
        "1 if the XDP program is attached to the interface, in the XDP mode it actually got.",
    );
    for iface in &s.interfaces {
        let mode = match (iface.attached, iface.mode) {
            (true, Some(mode)) => mode.to_string(),
            _ => "none".to_string(),
        };
        attached.add(
            &[("interface", &iface.name), ("mode", &mode)],
            bool_value(iface.attached),
        );
        let Some(counters) = &iface.counters else {
            continue;
        };
        for (reason, c) in counters.iter() {
            let labels = [
                ("interface", iface.name.as_str()),
                ("verdict", reason.action().label()),
                ("reason", reason.label()),
            ];
            packets.add(&labels, Value::Int(c.packets));
            bytes.add(&labels, Value::Int(c.bytes));
        }
    }

    let mut program_packets = Metric::new(
        "program_packets",
        Counter,
        "Packets the XDP program saw on every interface together, by verdict and reason.",
    );
    let mut program_bytes = Metric::new(
        "program_bytes",
        Counter,
        "Bytes the XDP program saw on every interface together, by verdict and reason.",
    );
    for (reason, c) in s.totals.iter() {
        let labels = reason_labels(reason);
        program_packets.add(&labels, Value::Int(c.packets));
        program_bytes.add(&labels, Value::Int(c.bytes));
    }

    let mut monitor = Metric::new(
        "monitor_mode",
        Gauge,
        "1 if monitor (dry-run) mode is on: nothing is dropped, matches count as monitor_*.",
    );
    monitor.add(&[], bool_value(s.monitor));

    let mut lists = Metric::new(
        "list_entries",
        Gauge,
        "Entries on a list, by address family and where they came from.",
    );
    for l in &s.lists {
        lists.add(
            &[
                ("list", l.list.label()),
                ("family", l.family.label()),
                ("source", &l.source),
            ],
            Value::Int(l.entries),
        );
    }
    let mut map_entries = Metric::new(
        "map_entries",
        Gauge,
        "Entries in a kernel map (block_exact: hash of addresses; block_cidr, allow: LPM tries).",
    );
    let mut map_max = Metric::new(
        "map_max_entries",
        Gauge,
        "Capacity of a kernel map; inserts beyond it fail.",
    );
    for m in &s.maps {
        let labels = [("map", map_label(m.map)), ("family", m.family.label())];
        map_entries.add(&labels, Value::Int(m.entries));
        map_max.add(&labels, Value::Int(m.capacity));
    }
    let mut failed = Metric::new(
        "failed_inserts",
        Counter,
        "List inserts refused because the map was full.",
    );
    failed.add(&[], Value::Int(s.failed_inserts));

    let mut run_time = Metric::new(
        "xdp_run_time",
        Counter,
        "Time the kernel spent in the XDP program (BPF run-time stats; 0 while they are off).",
    )
    .seconds();
    run_time.add(&[], Value::Float(s.program.run_time_ns as f64 / 1e9));
    let mut runs = Metric::new(
        "xdp_runs",
        Counter,
        "Runs of the XDP program counted by the kernel's BPF run-time stats.",
    );
    runs.add(&[], Value::Int(s.program.run_count));

    let mut feed_ok = Metric::new(
        "feed_refresh_success",
        Gauge,
        "1 if the feed's last refresh succeeded.",
    );
    let mut feed_last = Metric::new(
        "feed_last_success_timestamp",
        Gauge,
        "Unix time of the feed's last successful refresh (0: never).",
    )
    .seconds();
    let mut feed_interval = Metric::new(
        "feed_refresh_interval",
        Gauge,
        "How often the feed is meant to be refreshed.",
    )
    .seconds();
    let mut feed_entries = Metric::new(
        "feed_entries",
        Gauge,
        "Entries the feed contributes to the blocklist.",
    );
    let mut feed_refusals = Metric::new(
        "feed_refusals",
        Counter,
        "Feed refreshes refused as a whole (a bad line, the lockout guard, too large a change); \
         the previous set stays in force.",
    );
    for f in &s.feeds {
        let labels = [("feed", f.name.as_str())];
        feed_ok.add(&labels, bool_value(f.ok));
        feed_last.add(&labels, Value::Float(f.last_success_unix.unwrap_or(0.0)));
        if let Some(interval) = f.refresh_interval_seconds {
            feed_interval.add(&labels, Value::Float(interval));
        }
        feed_entries.add(&labels, Value::Int(f.entries));
        feed_refusals.add(&labels, Value::Int(f.refused));
    }
    let mut guard_refusals = Metric::new(
        "guard_refusals",
        Counter,
        "Blocks the lockout guard refused, by the kind of source that asked.",
    );
    for (source, n) in &s.guard_refusals {
        guard_refusals.add(&[("source", source.as_str())], Value::Int(*n));
    }
    let mut journal_damage = Metric::new(
        "journal_damaged_ranges",
        Gauge,
        "Damaged journal ranges found at start-up and moved aside (journal.damaged-*).",
    );
    journal_damage.add(&[], Value::Int(s.journal_damage));

    let mut top = Metric::new(
        "top_blocked_hits",
        Counter,
        "Packets matched by each of the most-hit blocked entries (a bounded top N).",
    );
    let mut top_blocked = s.top_blocked.clone();
    if top_blocked.len() > MAX_TOP_N {
        top_blocked.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.net.cmp(&b.net)));
        top_blocked.truncate(MAX_TOP_N);
    }
    for b in &top_blocked {
        top.add(&[("entry", &b.net.to_string())], Value::Int(b.hits));
    }

    vec![
        build,
        packets,
        bytes,
        program_packets,
        program_bytes,
        attached,
        monitor,
        lists,
        map_entries,
        map_max,
        failed,
        run_time,
        runs,
        feed_ok,
        feed_last,
        feed_interval,
        feed_entries,
        feed_refusals,
        guard_refusals,
        journal_damage,
        top,
    ]
}

fn reason_labels(reason: Reason) -> [(&'static str, &'static str); 2] {
    [
        ("verdict", reason.action().label()),
        ("reason", reason.label()),
    ]
}

/// How long one scrape's result answers later scrapes, unless the owner says otherwise
/// ([`router_with_cache`]).
pub const DEFAULT_CACHE_FOR: Duration = Duration::from_secs(1);

/// `GET /metrics`: reads a snapshot from `provider` (on a blocking thread: it makes syscalls and
/// may wait for a lock) and returns it in the OpenMetrics text format. A failed read is a 500
/// with the error, so Prometheus marks the scrape as failed rather than recording zeros.
/// Results are reused for [`DEFAULT_CACHE_FOR`] (see [`router_with_cache`]).
pub fn router(provider: SnapshotProvider) -> Router {
    router_with_cache(provider, DEFAULT_CACHE_FOR)
}

/// [`router`], with results (failures too) reused for `cache_for` after each read. Reads run
/// one at a time: scrapes that come while one runs wait for it and share its result. So however
/// many clients scrape, the maps are read at most once per `cache_for` plus one read's time: the
/// endpoint is unauthenticated, and reading a million entries takes about a second.
pub fn router_with_cache(provider: SnapshotProvider, cache_for: Duration) -> Router {
    let scraper = Arc::new(Scraper {
        provider,
        cache_for,
        last: tokio::sync::Mutex::new(None),
    });
    Router::new().route(
        "/metrics",
        get(move || {
            let scraper = scraper.clone();
            async move { respond(scraper.scrape().await) }
        }),
    )
}

/// The encoded text, or what went wrong.
type Scraped = Result<Bytes, String>;

/// Single flight and a short cache around a [`SnapshotProvider`].
struct Scraper {
    provider: SnapshotProvider,
    cache_for: Duration,
    /// When the last read finished, and its result. The lock is held through a read: that is
    /// what makes scrapes wait for the one in progress.
    last: tokio::sync::Mutex<Option<(Instant, Scraped)>>,
}

impl Scraper {
    async fn scrape(self: Arc<Self>) -> Scraped {
        // In a task of its own: a client that hangs up (or times out) mid-read drops only its
        // wait, not the lock holder, so the next scraper shares the read still running on the
        // blocking thread instead of starting a second one beside it.
        match tokio::spawn(async move { self.fresh().await }).await {
            Ok(scraped) => scraped,
            Err(join) => Err(format!("the scrape task failed: {join}")),
        }
    }

    async fn fresh(&self) -> Scraped {
        let mut last = self.last.lock().await;
        if let Some((at, scraped)) = &*last {
            if at.elapsed() < self.cache_for {
                return scraped.clone();
            }
        }
        let provider = self.provider.clone();
        // Encoding is CPU work in proportion to the snapshot: on the blocking thread as well.
        let scraped = match tokio::task::spawn_blocking(move || {
            provider().map(|snapshot| Bytes::from(encode(&snapshot)))
        })
        .await
        {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(error)) => {
                let message = groundzero::error::error_chain(&error);
                log::warn!("metrics scrape failed: {message}");
                Err(format!("reading metrics failed: {message}"))
            }
            Err(join) => {
                log::error!("metrics snapshot panicked: {join}");
                Err("reading metrics panicked".to_string())
            }
        };
        // Measured from the end of the read: under a stream of scrapes, the maps rest at least
        // `cache_for` between reads however long a read takes.
        *last = Some((Instant::now(), scraped.clone()));
        scraped
    }
}

fn respond(scraped: Scraped) -> Response {
    match scraped {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(message) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n")).into_response(),
    }
}

/// Serves [`router`] on `listener` with the daemon's listener limits
/// ([`crate::serve::Limits`]) until the future is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: SnapshotProvider,
) -> std::io::Result<()> {
    crate::serve::serve(
        "metrics",
        listener,
        router(provider),
        crate::serve::Limits::default(),
        std::future::pending(),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero_common::maps::Counter;

    fn counters(slots: &[(Reason, u64, u64)]) -> Counters {
        Counters::from_slots(
            slots
                .iter()
                .map(|&(r, packets, bytes)| (r, Counter { packets, bytes })),
        )
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn sample() -> MetricsSnapshot {
        MetricsSnapshot {
            interfaces: vec![
                InterfaceSnapshot {
                    name: "eth0".into(),
                    ifindex: 2,
                    mode: Some(ActiveMode::Native),
                    attached: true,
                    counters: Some(counters(&[
                        (Reason::BlockedExact, 30, 2220),
                        (Reason::NoMatch, 20, 1480),
                    ])),
                },
                InterfaceSnapshot {
                    name: "eth1".into(),
                    ifindex: 3,
                    mode: None,
                    attached: false,
                    counters: None,
                },
            ],
            totals: counters(&[
                (Reason::BlockedExact, 31, 2294),
                (Reason::NoMatch, 20, 1480),
            ]),
            monitor: false,
            lists: vec![
                ListCount {
                    list: ListSide::Block,
                    family: AddressFamily::Ipv4,
                    source: "manual".into(),
                    entries: 3,
                },
                ListCount {
                    list: ListSide::Block,
                    family: AddressFamily::Ipv6,
                    source: "feed:spamhaus".into(),
                    entries: 7,
                },
            ],
            maps: vec![MapFill {
                map: ListKind::BlockExact,
                family: AddressFamily::Ipv4,
                entries: 3,
                capacity: 1024,
            }],
            failed_inserts: 2,
            program: ProgramStats {
                run_time_ns: 1_500_000_000,
                run_count: 51,
            },
            feeds: vec![
                FeedStatus {
                    name: "spamhaus".into(),
                    ok: true,
                    last_success_unix: Some(1_700_000_000.5),
                    entries: 7,
                    refresh_interval_seconds: Some(3600.0),
                    refused: 2,
                },
                FeedStatus {
                    name: "never".into(),
                    ok: false,
                    last_success_unix: None,
                    entries: 0,
                    refresh_interval_seconds: None,
                    refused: 0,
                },
            ],
            guard_refusals: vec![("api".into(), 3)],
            journal_damage: 1,
            top_blocked: vec![BlockedSource {
                net: net("198.51.100.7/32"),
                hits: 30,
            }],
            journey: None,
        }
    }

    /// The sample lines (not comments) of `text`.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn names_types_and_labels() {
        let text = encode(&sample());
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            )
        };
        has("groundzero_build_info{version=\"0.1.0\"} 1");
        has("# TYPE groundzero_packets counter");
        has("groundzero_packets_total{interface=\"eth0\",verdict=\"drop\",reason=\"blocked_exact\"} 30");
        has("groundzero_bytes_total{interface=\"eth0\",verdict=\"drop\",reason=\"blocked_exact\"} 2220");
        has("groundzero_packets_total{interface=\"eth0\",verdict=\"pass\",reason=\"no_match\"} 20");
        has("groundzero_packets_total{interface=\"eth0\",verdict=\"pass\",reason=\"monitor_cidr\"} 0");
        has("groundzero_program_packets_total{verdict=\"drop\",reason=\"blocked_exact\"} 31");
        has("groundzero_interface_attached{interface=\"eth0\",mode=\"native\"} 1");
        has("groundzero_interface_attached{interface=\"eth1\",mode=\"none\"} 0");
        has("groundzero_monitor_mode 0");
        has("groundzero_list_entries{list=\"block\",family=\"ipv4\",source=\"manual\"} 3");
        has("groundzero_list_entries{list=\"block\",family=\"ipv6\",source=\"feed:spamhaus\"} 7");
        has("groundzero_map_entries{map=\"block_exact\",family=\"ipv4\"} 3");
        has("groundzero_map_max_entries{map=\"block_exact\",family=\"ipv4\"} 1024");
        has("groundzero_failed_inserts_total 2");
        has("# UNIT groundzero_xdp_run_time_seconds seconds");
        has("groundzero_xdp_run_time_seconds_total 1.5");
        has("groundzero_xdp_runs_total 51");
        has("groundzero_feed_refresh_success{feed=\"spamhaus\"} 1");
        has("groundzero_feed_last_success_timestamp_seconds{feed=\"spamhaus\"} 1700000000.5");
        has("groundzero_feed_last_success_timestamp_seconds{feed=\"never\"} 0.0");
        has("groundzero_feed_refresh_interval_seconds{feed=\"spamhaus\"} 3600.0");
        has("groundzero_feed_entries{feed=\"spamhaus\"} 7");
        has("groundzero_top_blocked_hits_total{entry=\"198.51.100.7/32\"} 30");
        assert!(text.ends_with("# EOF\n"));
        // eth1 has no counters: no packet series for it.
        assert!(!text.contains("groundzero_packets_total{interface=\"eth1\""));
    }

    #[test]
    fn follows_prometheus_conventions() {
        let text = encode(&sample());
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("groundzero_"), "{line}");
                types.insert(name.to_string(), kind.to_string());
            }
        }
        for line in samples(&text) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("groundzero_"), "{line}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{line}"
            );
            // Counters, and only counters, end in `_total`.
            let family = name.strip_suffix("_total");
            match family {
                Some(f) => assert_eq!(types[f], "counter", "{line}"),
                None => {
                    let family = name.strip_suffix("_info").unwrap_or(name);
                    assert_ne!(types[family], "counter", "{line}")
                }
            }
            // Base units: no milli/micro/nano anything.
            for bad in ["_ms", "_milli", "_micro", "_nano", "_ns", "_kb", "_mb"] {
                assert!(!name.contains(bad), "{line}");
            }
        }
        // Nothing is written twice.
        let mut seen = std::collections::HashSet::new();
        for line in samples(&text) {
            let series = line.rsplit_once(' ').unwrap().0;
            assert!(seen.insert(series), "duplicate series {series}");
        }
    }

    #[test]
    fn top_n_is_bounded() {
        let entries: Vec<ListEntry> = (0..1000u32)
            .map(|i| ListEntry {
                net: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                    0xC633_0000 + i,
                ))),
                hits: u64::from(i % 500),
                last_hit_ns: 0,
            })
            .collect();
        let top = top_blocked(&entries, 10);
        assert_eq!(top.len(), 10);
        assert_eq!(top[0].hits, 499);
        assert!(top.windows(2).all(|w| w[0].hits >= w[1].hits));
        assert_eq!(top_blocked(&entries, 1_000_000).len(), MAX_TOP_N);
        assert_eq!(top_blocked(&entries[..3], 10).len(), 3);

        // Even a snapshot stuffed by hand emits at most MAX_TOP_N entries: the most-hit ones.
        let mut snapshot = sample();
        snapshot.top_blocked = entries
            .iter()
            .map(|e| BlockedSource {
                net: e.net,
                hits: e.hits,
            })
            .collect();
        let text = encode(&snapshot);
        let lines: Vec<&str> = samples(&text)
            .into_iter()
            .filter(|l| l.starts_with("groundzero_top_blocked_hits_total"))
            .collect();
        assert_eq!(lines.len(), MAX_TOP_N);
        assert!(lines.iter().all(|l| {
            let hits: u64 = l.rsplit_once(' ').unwrap().1.parse().unwrap();
            // Hits 0..500, each twice: the top 100 are 499 down to 450.
            hits >= 450
        }));
    }

    #[test]
    fn label_values_are_escaped_and_duplicates_merged() {
        let mut snapshot = sample();
        snapshot.feeds = vec![FeedStatus {
            name: "a\"b\\c\nd".into(),
            ok: true,
            last_success_unix: None,
            entries: 1,
            refresh_interval_seconds: None,
            refused: 0,
        }];
        // The same interface name twice (e.g. two namespaces): counters add up, no duplicate.
        let again = snapshot.interfaces[0].clone();
        snapshot.interfaces.push(again);
        let text = encode(&snapshot);
        assert!(
            text.contains("groundzero_feed_entries{feed=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "groundzero_packets_total{interface=\"eth0\",verdict=\"drop\",reason=\"blocked_exact\"} 60"
        ));
    }

    #[test]
    fn empty_snapshot_is_valid() {
        let text = encode(&MetricsSnapshot::default());
        assert!(text.contains("groundzero_build_info"));
        assert!(text.contains("groundzero_xdp_runs_total 0"));
        assert!(!text.contains("groundzero_packets_total"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// A provider that counts its calls and takes `takes` per call.
    fn counting(takes: Duration) -> (SnapshotProvider, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let provider: SnapshotProvider = {
            let calls = calls.clone();
            Arc::new(move || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(takes);
                Ok(sample())
            })
        };
        (provider, calls)
    }

    fn scraper(provider: SnapshotProvider, cache_for: Duration) -> Arc<Scraper> {
        Arc::new(Scraper {
            provider,
            cache_for,
            last: tokio::sync::Mutex::new(None),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_read_and_the_cache_expires() {
        use std::sync::atomic::Ordering::SeqCst;
        let (provider, calls) = counting(Duration::from_millis(200));
        let scraper = scraper(provider, Duration::from_millis(300));
        let scrapes: Vec<_> = (0..50)
            .map(|_| tokio::spawn(scraper.clone().scrape()))
            .collect();
        for s in scrapes {
            let text = s.await.unwrap().unwrap();
            assert!(text.ends_with(b"# EOF\n"));
        }
        assert_eq!(calls.load(SeqCst), 1, "50 concurrent scrapes, one read");
        // Within the cache interval: no read.
        scraper.clone().scrape().await.unwrap();
        assert_eq!(calls.load(SeqCst), 1);
        // After it: a fresh read.
        tokio::time::sleep(Duration::from_millis(350)).await;
        scraper.clone().scrape().await.unwrap();
        assert_eq!(calls.load(SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scraper_that_hangs_up_does_not_start_a_second_read() {
        use std::sync::atomic::Ordering::SeqCst;
        let (provider, calls) = counting(Duration::from_millis(300));
        let scraper = scraper(provider, Duration::from_secs(5));
        let first = tokio::spawn(scraper.clone().scrape());
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.abort(); // the client went away mid-read
        let second = scraper.clone().scrape().await.unwrap();
        assert!(second.ends_with(b"# EOF\n"));
        assert_eq!(calls.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_cached_too() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failing: SnapshotProvider = {
            let calls = calls.clone();
            Arc::new(move || {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(Error::NotAttached {
                    interface: "eth9".into(),
                })
            })
        };
        let scraper = scraper(failing, Duration::from_secs(5));
        for _ in 0..3 {
            let error = scraper.clone().scrape().await.unwrap_err();
            assert!(error.contains("eth9"), "{error}");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn router_serves_openmetrics_and_reports_errors() {
        let ok: SnapshotProvider = Arc::new(|| Ok(sample()));
        let failing: SnapshotProvider = Arc::new(|| {
            Err(Error::NotAttached {
                interface: "eth9".into(),
            })
        });
        for (provider, status) in [
            (ok, StatusCode::OK),
            (failing, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(serve(listener, provider));
            let (code, content_type, body) = tokio::task::spawn_blocking(move || {
                let response = ureq::get(&format!("http://{addr}/metrics")).call();
                let response = match response {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("{e}"),
                };
                (
                    response.status(),
                    response.header("content-type").unwrap_or("").to_string(),
                    response.into_string().unwrap(),
                )
            })
            .await
            .unwrap();
            server.abort();
            assert_eq!(code, status.as_u16(), "{body}");
            if status == StatusCode::OK {
                assert_eq!(content_type, CONTENT_TYPE);
                assert!(body.ends_with("# EOF\n"));
            } else {
                assert!(body.contains("eth9"), "{body}");
            }
        }
    }
}
