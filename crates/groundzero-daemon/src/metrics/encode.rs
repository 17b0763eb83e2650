//! The OpenMetrics text of a [`MetricsSnapshot`] ([`encode`]): metric names, help, units and
//! labels.

use std::{collections::BTreeMap, fmt};

use groundzero::error::ListKind;
use groundzero_common::Reason;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::snapshot::{MetricsSnapshot, MAX_TOP_N};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        let status = &f.status;
        let labels = [("feed", status.name.as_str())];
        feed_ok.add(
            &labels,
            bool_value(status.error.is_none() && status.last_success.is_some()),
        );
        feed_last.add(
            &labels,
            Value::Float(status.last_success.map_or(0.0, |t| t as f64)),
        );
        if let Some(interval) = f.refresh_interval {
            feed_interval.add(&labels, Value::Float(interval.as_secs_f64()));
        }
        feed_entries.add(&labels, Value::Int(status.entries));
        feed_refusals.add(&labels, Value::Int(status.refused));
    }
    let mut crowdsec_up = Metric::new(
        "crowdsec_up",
        Gauge,
        "1 if the last pull of the CrowdSec LAPI succeeded (the set in force stays either way).",
    );
    let mut crowdsec_decisions = Metric::new(
        "crowdsec_decisions",
        Gauge,
        "Entries live CrowdSec ban decisions ask for, by source (crowdsec:<origin>) and scope.",
    );
    let mut crowdsec_pulls = Metric::new(
        "crowdsec_pulls",
        Counter,
        "Successful pulls of the CrowdSec decision stream.",
    );
    let mut crowdsec_errors = Metric::new(
        "crowdsec_pull_errors",
        Counter,
        "Failed pulls of the CrowdSec decision stream (down, slow, refused, garbage, or a \
         startup set refused by max_change).",
    );
    let mut crowdsec_last = Metric::new(
        "crowdsec_last_success_timestamp",
        Gauge,
        "Unix time of the last successful pull of the CrowdSec LAPI (0: never).",
    )
    .seconds();
    let mut crowdsec_interval = Metric::new(
        "crowdsec_pull_interval",
        Gauge,
        "How often the CrowdSec LAPI is meant to be pulled.",
    )
    .seconds();
    let mut pushed_alerts = Metric::new(
        "crowdsec_pushed_alerts",
        Counter,
        "Alerts (one per ban made here) the CrowdSec LAPI accepted from the watcher.",
    );
    let mut push_errors = Metric::new(
        "crowdsec_push_errors",
        Counter,
        "Failed pushes to the CrowdSec LAPI (login or POST /v1/alerts); the bans stay queued.",
    );
    let mut push_queued = Metric::new(
        "crowdsec_push_queue_length",
        Gauge,
        "Bans waiting to be pushed to the CrowdSec LAPI.",
    );
    let mut push_dropped = Metric::new(
        "crowdsec_push_dropped",
        Counter,
        "Bans dropped, oldest first, because the push queue was full.",
    );
    let mut push_last = Metric::new(
        "crowdsec_push_last_success_timestamp",
        Gauge,
        "Unix time of the last successful push to the CrowdSec LAPI (0: never).",
    )
    .seconds();
    if let Some(push) = s.crowdsec.as_ref().and_then(|cs| cs.status.push.as_ref()) {
        pushed_alerts.add(&[], Value::Int(push.pushed_alerts));
        push_errors.add(&[], Value::Int(push.push_errors));
        push_queued.add(&[], Value::Int(push.queued));
        push_dropped.add(&[], Value::Int(push.dropped));
        push_last.add(&[], Value::Float(push.last_push.map_or(0.0, |t| t as f64)));
    }
    if let Some((cs, pull_interval)) = s
        .crowdsec
        .as_ref()
        .and_then(|cs| Some((cs, cs.pull_interval?)))
    {
        let st = &cs.status;
        crowdsec_up.add(
            &[],
            bool_value(st.consecutive_errors == 0 && st.last_success.is_some()),
        );
        for (source, scopes) in &st.entries {
            for (scope, n) in scopes {
                crowdsec_decisions.add(&[("source", source), ("scope", scope)], Value::Int(*n));
            }
        }
        crowdsec_pulls.add(&[], Value::Int(st.pulls));
        crowdsec_errors.add(&[], Value::Int(st.pull_errors));
        crowdsec_last.add(&[], Value::Float(st.last_success.map_or(0.0, |t| t as f64)));
        crowdsec_interval.add(&[], Value::Float(pull_interval.as_secs_f64()));
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

    let mut by_origin = Metric::new(
        "origin_dropped_packets",
        Gauge,
        "Packets dropped (or, in monitor mode, matched) by the blocked entries each origin holds \
         (feed:<name>, auto-ban, app:<name>, api, ...): the sum of those entries' hit counters, \
         so it falls when hit entries are removed. An entry two origins hold counts for both.",
    );
    let mut origins = s.drops_by_origin.clone();
    if origins.len() > MAX_ORIGINS {
        origins.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        origins.truncate(MAX_ORIGINS);
    }
    for (origin, n) in &origins {
        by_origin.add(&[("origin", origin.as_str())], Value::Int(*n));
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
        crowdsec_up,
        crowdsec_decisions,
        crowdsec_pulls,
        crowdsec_errors,
        crowdsec_last,
        crowdsec_interval,
        pushed_alerts,
        push_errors,
        push_queued,
        push_dropped,
        push_last,
        guard_refusals,
        journal_damage,
        top,
        by_origin,
    ]
}

/// The most origins `groundzero_origin_dropped_packets` shows (those with the most drops): a
/// bound on its label cardinality, since applications name themselves.
pub const MAX_ORIGINS: usize = 100;

fn reason_labels(reason: Reason) -> [(&'static str, &'static str); 2] {
    [
        ("verdict", reason.action().label()),
        ("reason", reason.label()),
    ]
}
