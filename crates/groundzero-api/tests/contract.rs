//! The contract: for every endpoint, the typed reply serializes to exactly the bytes the
//! daemon's code produced before it had types, and reads back to the same value.
//!
//! `today` below is the daemon's reply code as it was (its `#[derive(Serialize)]` structs and
//! its `json!` bodies, copied from daemon/api.rs, daemon/journey.rs, daemon/registry.rs,
//! daemon/guard.rs, daemon/feeds.rs and journey/*), fed with the same values as the typed
//! sample. The comparison is on bytes, not on parsed values: key order is part of what is
//! checked (those replies went through `serde_json::Value`, whose objects are sorted maps).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
};

use groundzero_api::{
    counters::ReasonCounters,
    errors::ErrorBody,
    feeds::{FeedStatus, FeedsReply, ImportReply, ImportRequest, RefreshReply},
    guard::GuardReply,
    journey::{
        EventKind, Journey, JourneySummary, RecentQuery, RecentReply, StageLatency, TraceStatus,
        TracingReply, TracingRequest,
    },
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, EntryStatus, EntryView, Holder,
        RemoveReply, RemoveRequest, WhyReply,
    },
    sample::Sample,
    status::{HealthReply, MonitorReply, MonitorRequest, StatsReply},
    Reason,
};
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

/// The daemon's reply types as they were, before `groundzero-api`.
mod today {
    use ipnet::IpNet;
    use serde::{Deserialize, Serialize};
    use std::net::IpAddr;

    #[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(rename_all = "lowercase")]
    pub enum Side {
        Block,
        Allow,
    }

    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Holder {
        pub source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
        pub created: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub expires: Option<u64>,
    }

    #[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum FeedFormat {
        #[default]
        Plain,
        Spamhaus,
        Firehol,
    }

    #[derive(Clone, Debug, Default, Serialize)]
    pub struct FeedStatus {
        pub name: String,
        pub url: String,
        pub format: FeedFormat,
        pub entries: usize,
        pub last_attempt: Option<u64>,
        pub last_success: Option<u64>,
        pub error: Option<String>,
        pub refused: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    #[serde(tag = "status", rename_all = "lowercase")]
    pub enum EntryStatus {
        Added,
        Held,
        Refused { why: String },
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct EntryOutcome {
        pub entry: IpNet,
        #[serde(flatten)]
        pub status: EntryStatus,
    }

    #[derive(Clone, Debug, Serialize)]
    pub struct EntryView {
        pub entry: IpNet,
        pub list: Side,
        pub kind: &'static str,
        pub holders: Vec<Holder>,
        pub hits: u64,
        pub last_hit_seconds_ago: Option<f64>,
    }

    #[derive(Clone, Debug, Serialize)]
    pub struct Why {
        pub address: IpAddr,
        pub verdict: &'static str,
        pub reason: &'static str,
        pub monitor: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub matched: Option<EntryView>,
        pub also_matching: Vec<EntryView>,
    }

    #[derive(Clone, Debug, Serialize)]
    pub struct ProtectedAddress {
        pub entry: IpNet,
        pub why: &'static str,
    }

    #[derive(Clone, Debug, Serialize)]
    pub struct GuardView {
        pub configured: Vec<IpNet>,
        pub protect_management: bool,
        pub ssh_port: u16,
        pub management: Vec<ProtectedAddress>,
        pub read_seconds_ago: Option<f64>,
        pub error: Option<String>,
        pub widest_v4: u8,
        pub widest_v6: u8,
    }

    #[derive(Serialize)]
    pub struct CounterView {
        pub packets: u64,
        pub bytes: u64,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct MissingStage {
        pub stage: &'static str,
        pub hook: &'static str,
        pub why: String,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct TraceStatus {
        pub enabled: bool,
        pub sample_every: u32,
        pub filter: String,
        pub stages_missing: Vec<MissingStage>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct StageLatency {
        pub stage: &'static str,
        pub label: &'static str,
        pub count: u64,
        pub p50_ns: u64,
        pub p99_ns: u64,
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct MatchCounts {
        pub unseen_in_stack: u64,
        pub unknown_id: u64,
        pub after_end: u64,
        pub repeated: u64,
    }

    #[derive(Clone, Copy, Debug, Default, Serialize)]
    pub struct Cost {
        pub window_s: f64,
        pub xdp_ns_per_packet: Option<f64>,
        pub observers_cpu_ms_per_s: f64,
        pub observers_runs_per_s: f64,
        pub observers_ns_per_run: Option<f64>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct Hop {
        pub stage: &'static str,
        pub label: String,
        pub t_ns: u64,
        pub cpu: u32,
    }

    // The requests, as the daemon declared them.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct AddRequest {
        pub entries: Vec<String>,
        #[serde(default)]
        pub reason: Option<String>,
        #[serde(default)]
        pub ttl: Option<String>,
        #[serde(default)]
        pub source: Option<String>,
        #[serde(default)]
        pub force: bool,
        #[serde(default)]
        pub all_or_nothing: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct RemoveRequest {
        pub entries: Vec<String>,
        #[serde(default)]
        pub source: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct EntriesQuery {
        pub list: Option<Side>,
        pub source: Option<String>,
        #[serde(default = "default_limit")]
        pub limit: usize,
    }
    fn default_limit() -> usize {
        10_000
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct MonitorRequest {
        pub enabled: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct ImportRequest {
        pub name: String,
        #[serde(default)]
        pub format: FeedFormat,
        pub text: String,
        #[serde(default)]
        pub force: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct RecentQuery {
        #[serde(default = "default_recent")]
        pub limit: usize,
        pub outcome: Option<String>,
    }
    fn default_recent() -> usize {
        50
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct TracingRequest {
        pub enabled: bool,
        pub sample_every: Option<u32>,
        pub filter: Option<String>,
    }
}

/// `typed` is byte for byte what the daemon sent (`today`), and reads back as itself.
fn contract<T>(typed: &T, today: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(typed).expect("serializes");
    assert_eq!(
        text,
        today.to_string(),
        "typed reply differs from the daemon's"
    );
    let back: T = serde_json::from_str(&text).expect("reads back");
    assert_eq!(&back, typed, "round trip");
    let pretty = serde_json::to_string_pretty(typed).expect("serializes");
    assert_eq!(
        serde_json::from_str::<T>(&pretty).expect("reads back"),
        back
    );
}

/// Leaks a string: the daemon's views held `&'static str` labels.
fn st(s: impl Into<String>) -> &'static str {
    Box::leak(s.into().into_boxed_str())
}

fn holder_today(h: &Holder) -> today::Holder {
    today::Holder {
        source: h.source.to_string(),
        reason: h.reason.clone(),
        created: h.created,
        expires: h.expires,
    }
}

fn side_today(side: groundzero_api::lists::Side) -> today::Side {
    match side {
        groundzero_api::lists::Side::Block => today::Side::Block,
        groundzero_api::lists::Side::Allow => today::Side::Allow,
    }
}

fn view_today(v: &EntryView) -> today::EntryView {
    today::EntryView {
        entry: v.entry,
        list: side_today(v.list),
        kind: st(v.kind.label()),
        holders: v.holders.iter().map(holder_today).collect(),
        hits: v.hits,
        last_hit_seconds_ago: v.last_hit_seconds_ago,
    }
}

fn feed_today(f: &FeedStatus) -> today::FeedStatus {
    today::FeedStatus {
        name: f.name.clone(),
        url: f.url.clone(),
        format: serde_json::from_value(json!(f.format.label())).expect("same labels"),
        entries: f.entries as usize,
        last_attempt: f.last_attempt,
        last_success: f.last_success,
        error: f.error.clone(),
        refused: f.refused,
    }
}

fn trace_today(t: &TraceStatus) -> today::TraceStatus {
    today::TraceStatus {
        enabled: t.enabled,
        sample_every: t.sample_every,
        filter: t.filter.clone(),
        stages_missing: t
            .stages_missing
            .iter()
            .map(|m| today::MissingStage {
                stage: m.stage.label(),
                hook: st(m.hook.clone()),
                why: m.why.clone(),
            })
            .collect(),
    }
}

// ---- the lists -------------------------------------------------------------------------------

#[test]
fn health() {
    contract(&HealthReply::sample(), json!({"status": "ok"}));
}

#[test]
fn block_and_allow() {
    let reply = AddReply::sample();
    let outcomes: Vec<today::EntryOutcome> = reply
        .results
        .iter()
        .map(|o| today::EntryOutcome {
            entry: o.entry,
            status: match &o.status {
                EntryStatus::Added => today::EntryStatus::Added,
                EntryStatus::Held => today::EntryStatus::Held,
                EntryStatus::Refused { why } => today::EntryStatus::Refused { why: why.clone() },
            },
        })
        .collect();
    let expires: Option<u64> = reply.expires;
    // From daemon/api.rs `add` (the counts there are computed from the outcomes; here they
    // are the sample's own).
    let mut body = json!({
        "added": reply.added,
        "entries": reply.entries,
        "applied": reply.applied,
        "refused": reply.refused,
        "expires": expires,
        "results": outcomes,
    });
    // The 409 body: the same, with the error.
    body["error"] = json!(reply.error.clone().expect("the sample has one"));
    contract(&reply, body.clone());

    // The 2xx body: no `error` at all, and `expires` is null without a TTL.
    let ok = AddReply {
        error: None,
        expires: None,
        ..reply
    };
    body.as_object_mut().unwrap().remove("error");
    body["expires"] = json!(None::<u64>);
    contract(&ok, body);
    assert_eq!(
        AddReply::sample()
            .refusals()
            .map(|(e, _)| e.to_string())
            .collect::<Vec<_>>(),
        ["2001:db8::/32"]
    );
}

#[test]
fn unblock_and_unallow() {
    let reply = RemoveReply::sample();
    let (removed, still_held): (Vec<IpNet>, Vec<IpNet>) =
        (reply.removed.clone(), reply.still_held.clone());
    contract(
        &reply,
        json!({ "removed": removed, "still_held": still_held }),
    );
}

#[test]
fn entries() {
    let reply = EntriesReply::sample();
    let list: Vec<today::EntryView> = reply.entries.iter().map(view_today).collect();
    contract(&reply, json!({ "entries": list }));
}

#[test]
fn why() {
    let reply = WhyReply::sample();
    let why = today::Why {
        address: reply.address,
        verdict: reply.verdict.label(),
        reason: reply.reason.label(),
        monitor: reply.monitor,
        matched: reply.matched.as_ref().map(view_today),
        also_matching: reply.also_matching.iter().map(view_today).collect(),
    };
    contract(&reply, serde_json::to_value(&why).unwrap_or_default());

    // `no_match`: `matched` absent, not null.
    let none = WhyReply {
        matched: None,
        reason: Reason::NoMatch,
        ..reply
    };
    let why = today::Why {
        matched: None,
        reason: "no_match",
        ..why
    };
    contract(&none, serde_json::to_value(&why).unwrap_or_default());
}

// ---- guard, monitor, feeds, stats --------------------------------------------------------------

#[test]
fn guard() {
    let reply = GuardReply::sample();
    let view = today::GuardView {
        configured: reply.configured.clone(),
        protect_management: reply.protect_management,
        ssh_port: reply.ssh_port,
        management: reply
            .management
            .iter()
            .map(|m| today::ProtectedAddress {
                entry: m.entry,
                why: st(m.why.clone()),
            })
            .collect(),
        read_seconds_ago: reply.read_seconds_ago,
        error: reply.error.clone(),
        widest_v4: reply.widest_v4,
        widest_v6: reply.widest_v6,
    };
    let rate_exempt: BTreeSet<IpNet> = reply.rate_exempt.iter().copied().collect();
    let refusals: BTreeMap<String, u64> = reply
        .refusals
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    // From daemon/api.rs `guard`.
    let mut v = serde_json::to_value(view).unwrap_or_default();
    v["allowlist_entries"] = json!(reply.allowlist_entries);
    v["rate_exempt"] = json!(rate_exempt);
    v["refusals"] = json!(refusals);
    contract(&reply, v);
}

#[test]
fn monitor() {
    let reply = MonitorReply::sample();
    contract(&reply, json!({ "monitor": reply.monitor }));
}

#[test]
fn import() {
    let r = ImportReply::sample();
    contract(
        &r,
        json!({
            "name": r.name, "entries": r.entries, "added": r.added, "removed": r.removed,
            "seconds": r.seconds,
        }),
    );
}

#[test]
fn feeds_and_refresh() {
    let reply = FeedsReply::sample();
    let statuses: Vec<today::FeedStatus> = reply.feeds.iter().map(feed_today).collect();
    contract(&reply, json!({ "feeds": statuses }));

    let refresh = RefreshReply::sample();
    let status = refresh.feed.as_ref().map(feed_today);
    contract(&refresh, json!({ "feed": status }));
    contract(
        &RefreshReply { feed: None },
        json!({ "feed": None::<today::FeedStatus> }),
    );
}

#[test]
fn stats() {
    let reply = StatsReply::sample();
    // From daemon/api.rs `stats`: every reason of a Counters, keyed by label.
    let reasons = |c: &ReasonCounters| -> serde_json::Map<String, Value> {
        c.iter()
            .map(|(r, v)| {
                (
                    r.label().to_string(),
                    json!(today::CounterView {
                        packets: v.packets,
                        bytes: v.bytes
                    }),
                )
            })
            .collect()
    };
    let interfaces: Vec<Value> = reply
        .interfaces
        .iter()
        .map(|a| {
            json!({
                "interface": a.interface, "ifindex": a.ifindex, "mode": a.mode.to_string(),
                "adopted": a.adopted, "counters": reasons(&a.counters),
            })
        })
        .collect();
    let counts: Vec<Value> = reply
        .entries
        .iter()
        .map(|c| {
            let (side, source, family, n) = (
                side_today(c.list),
                c.source.to_string(),
                c.family.label(),
                c.entries,
            );
            json!({"list": side, "source": source, "family": family, "entries": n})
        })
        .collect();
    let o = &reply.capacity;
    contract(
        &reply,
        json!({
            "monitor": reply.monitor,
            "uptime_seconds": reply.uptime_seconds,
            "counters": reasons(&reply.counters),
            "drops_by_origin": reply.drops_by_origin.iter()
                .map(|o| json!({"origin": o.origin, "packets": o.packets}))
                .collect::<Vec<_>>(),
            "interfaces": interfaces,
            "entries": counts,
            "capacity": {"exact": o.exact, "cidr": o.cidr, "allow": o.allow},
            "failed_inserts": reply.failed_inserts,
        }),
    );
}

// ---- journeys ---------------------------------------------------------------------------------

fn latency_today(l: &StageLatency) -> today::StageLatency {
    today::StageLatency {
        stage: l.stage.label(),
        label: st(l.label.clone()),
        count: l.count,
        p50_ns: l.p50_ns,
        p99_ns: l.p99_ns,
    }
}

/// daemon/journey.rs `summary_json`, over the values of a typed summary.
fn summary_today(s: &JourneySummary) -> Value {
    let r = s.rates;
    let outcomes: serde_json::Map<String, Value> = [
        ("xdp_drop", s.outcomes.xdp_drop),
        ("delivered", s.outcomes.delivered),
        ("consumed", s.outcomes.consumed),
        ("kernel_drop", s.outcomes.kernel_drop),
        ("incomplete", s.outcomes.incomplete),
        ("merged", s.outcomes.merged),
    ]
    .into_iter()
    .map(|(o, n)| (o.to_string(), json!(n)))
    .chain([("unmatched".to_string(), json!(s.outcomes.unmatched))])
    .collect();
    let matching = today::MatchCounts {
        unseen_in_stack: s.matching.unseen_in_stack,
        unknown_id: s.matching.unknown_id,
        after_end: s.matching.after_end,
        repeated: s.matching.repeated,
    };
    let cost = s.cost.map(|c| today::Cost {
        window_s: c.window_s,
        xdp_ns_per_packet: c.xdp_ns_per_packet,
        observers_cpu_ms_per_s: c.observers_cpu_ms_per_s,
        observers_runs_per_s: c.observers_runs_per_s,
        observers_ns_per_run: c.observers_ns_per_run,
    });
    let stages: Vec<today::StageLatency> = s.stages.iter().map(latency_today).collect();
    let cumulative: Vec<today::StageLatency> = s.cumulative.iter().map(latency_today).collect();
    json!({
        "tracing": trace_today(&s.tracing),
        "rates": {
            "window_s": r.window_s,
            "seen_pps": r.seen_pps,
            "dropped_pps": r.dropped_pps,
            "passed_pps": r.passed_pps,
            "stack_pps": r.stack_pps,
            "socket_pps": r.socket_pps,
            "app_pps": r.app_pps,
            "kernel_dropped_pps": r.kernel_dropped_pps,
            "filtered_seen_pps": r.filtered_seen_pps,
            "filtered_passed_pps": r.filtered_passed_pps,
            "filtered_dropped_pps": r.filtered_dropped_pps,
        },
        "totals": {
            "seen": s.totals.seen,
            "dropped": s.totals.dropped,
            "filtered_dropped": s.totals.filtered_dropped,
            "filtered_passed": s.totals.filtered_passed,
            "filtered_seen": s.totals.filtered_seen,
            "passed": s.totals.passed,
        },
        "stages": stages,
        "cumulative": cumulative,
        "outcomes": outcomes,
        "matching": matching,
        "kernel_drop_reasons": s.kernel_drop_reasons.iter()
            .map(|d| json!({"reason": d.reason, "count": d.count}))
            .collect::<Vec<_>>(),
        "journeys_skipped": s.journeys_skipped,
        "cost": cost,
        "drop_sites": s.drop_sites.iter()
            .map(|d| json!({"function": d.function, "reason": d.reason, "count": d.count}))
            .collect::<Vec<_>>(),
        "nic_to_xdp": {"measured": s.nic_to_xdp.measured, "why": s.nic_to_xdp.why},
        "not_observed": s.not_observed.iter()
            .map(|n| json!({"stage": n.stage.label(), "why": n.why}))
            .collect::<Vec<_>>(),
        "stage_rates": s.stage_rates.iter()
            .map(|r| json!({
                "stage": r.stage.label(),
                "pps": r.pps,
                "basis": r.basis.label(),
                "share": r.share,
                "population": r.population,
            }))
            .collect::<Vec<_>>(),
        "verdict": s.verdict.as_ref().map(|v| json!({
            "p50_ns": v.p50_ns,
            "p99_ns": v.p99_ns,
            "samples": v.samples,
            "kernel_mean_ns": v.kernel_mean_ns,
            "span": v.span,
        })),
    })
}

/// daemon/journey.rs `journey_json`, over the values of a typed journey.
fn journey_today(j: &Journey) -> Value {
    let entry = j.entry.as_ref().map(|m| {
        json!({
            "entry": m.entry.to_string(),
            "source": m.source.as_ref().map(|s| s.to_string()),
            "reason": m.reason.clone(),
            "expires_unix": m.expires_unix,
            "resolved": m.resolved.label(),
            "resolved_unix_ms": m.resolved_unix_ms,
        })
    });
    let hops: Vec<today::Hop> = j
        .hops
        .iter()
        .map(|h| today::Hop {
            stage: h.stage.label(),
            label: h.label.clone(),
            t_ns: h.t_ns,
            cpu: h.cpu,
        })
        .collect();
    json!({
        "id": j.id,
        "unix_ms": j.unix_ms,
        "family": j.family,
        "protocol": j.protocol,
        "src": j.src,
        "dst": j.dst,
        "interface": j.interface,
        "verdict": j.verdict.label(),
        "reason": j.reason.label(),
        "entry": entry,
        "outcome": j.outcome.label(),
        "drop_reason": j.drop_reason,
        "hops": hops,
        "total_ns": j.total_ns,
    })
}

#[test]
fn journey_summary() {
    let s = JourneySummary::sample();
    contract(&s, summary_today(&s));
    // Before two readings: no cost; tracing off with nothing measured.
    let empty = JourneySummary::default();
    contract(&empty, summary_today(&empty));
    // A stage not observed has no estimate: null, never a 0 that reads as "nothing got there".
    let text = serde_json::to_value(&empty).unwrap();
    for rate in ["stack_pps", "socket_pps", "app_pps", "kernel_dropped_pps"] {
        assert_eq!(text["rates"][rate], Value::Null, "{rate}");
    }
    assert_eq!(
        s.cumulative_at(groundzero_api::Stage::App)
            .map(|c| c.p50_ns),
        Some(40_000)
    );
}

#[test]
fn journey_recent() {
    let reply = RecentReply::sample();
    let out: Vec<Value> = reply.journeys.iter().map(journey_today).collect();
    contract(&reply, json!({ "journeys": out }));
    // A journey nothing decided: `entry` and `drop_reason` are null, not absent.
    let passed = Journey {
        entry: None,
        drop_reason: None,
        ..Journey::sample()
    };
    contract(&passed, journey_today(&passed));
    let entry_without_holder = Journey {
        entry: Some(groundzero_api::journey::DecidingEntry {
            source: None,
            reason: None,
            expires_unix: None,
            ..Journey::sample().entry.unwrap()
        }),
        ..Journey::sample()
    };
    contract(&entry_without_holder, journey_today(&entry_without_holder));
}

#[test]
fn journey_history() {
    // daemon/journey/history.rs: one object per minute, oldest first.
    let reply = groundzero_api::journey::HistoryReply::sample();
    let minutes: Vec<Value> = reply
        .minutes
        .iter()
        .map(|m| {
            json!({
                "start_unix": m.start_unix,
                "journeys": m.journeys,
                "stages": m.stages.iter().map(latency_today).collect::<Vec<_>>(),
            })
        })
        .collect();
    contract(&reply, json!({ "minutes": minutes }));
    let empty = groundzero_api::journey::HistoryReply::default();
    contract(&empty, json!({ "minutes": [] }));
}

#[test]
fn journey_configure() {
    let reply = TracingReply::sample();
    let status = trace_today(&reply.tracing);
    contract(&reply, json!({ "tracing": status }));
}

#[test]
fn journey_events_carry_the_same_bodies() {
    // The stream's `data:` is `summary_json(..).to_string()` / `journey_json(..).to_string()`.
    let s = JourneySummary::sample();
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        summary_today(&s).to_string()
    );
    let j = Journey::sample();
    assert_eq!(
        serde_json::to_string(&j).unwrap(),
        journey_today(&j).to_string()
    );
    assert_eq!(EventKind::Summary.label(), "summary");
    assert_eq!(EventKind::Journey.label(), "journey");
}

#[test]
fn errors() {
    let e = ErrorBody::sample();
    contract(&e, json!({ "error": e.error }));
    // A 409 from `block` carries counts too: reading it as an error still finds the message.
    let conflict = serde_json::to_string(&AddReply::sample()).unwrap();
    let as_error: ErrorBody = serde_json::from_str(&conflict).unwrap();
    assert!(as_error.error.ends_with("pass force to do it anyway"));
}

// ---- requests: what the typed client sends, the daemon's old types accept --------------------

/// `typed` serializes to something the daemon's own request type accepts, and reads back.
fn request<T, Old>(typed: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
    Old: DeserializeOwned,
{
    let v = serde_json::to_value(typed).unwrap();
    serde_json::from_value::<Old>(v.clone()).expect("the daemon's request type accepts it");
    assert_eq!(&serde_json::from_value::<T>(v).unwrap(), typed);
}

/// Both refuse an unknown field with the same message.
fn same_refusal<T: DeserializeOwned + Debug, Old: DeserializeOwned>(body: &str) {
    let new = serde_json::from_str::<T>(body).unwrap_err().to_string();
    let old = match serde_json::from_str::<Old>(body) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the old type took {body}"),
    };
    assert_eq!(new, old, "{body}");
}

#[test]
fn requests_match_the_daemons() {
    request::<AddRequest, today::AddRequest>(&AddRequest::sample());
    request::<AddRequest, today::AddRequest>(&AddRequest {
        entries: vec!["192.0.2.1".into()],
        ..Default::default()
    });
    request::<RemoveRequest, today::RemoveRequest>(&RemoveRequest::sample());
    request::<EntriesQuery, today::EntriesQuery>(&EntriesQuery::sample());
    request::<MonitorRequest, today::MonitorRequest>(&MonitorRequest::sample());
    request::<ImportRequest, today::ImportRequest>(&ImportRequest::sample());
    request::<RecentQuery, today::RecentQuery>(&RecentQuery::sample());
    request::<TracingRequest, today::TracingRequest>(&TracingRequest::sample());

    same_refusal::<AddRequest, today::AddRequest>(r#"{"entries": ["1.2.3.4"], "colour": 1}"#);
    same_refusal::<AddRequest, today::AddRequest>(r#"{"reason": "x"}"#);
    same_refusal::<AddRequest, today::AddRequest>(r#"{"entries": "1.2.3.4"}"#);
    same_refusal::<RemoveRequest, today::RemoveRequest>(r#"{"entries": [], "all": true}"#);
    same_refusal::<ImportRequest, today::ImportRequest>(
        r#"{"name": "a", "text": "", "format": "xml"}"#,
    );
    same_refusal::<ImportRequest, today::ImportRequest>(r#"{"name": "a", "text": "", "url": "x"}"#);
    same_refusal::<TracingRequest, today::TracingRequest>(r#"{"enabled": true, "every": 2}"#);
    same_refusal::<MonitorRequest, today::MonitorRequest>(r#"{"enabled": "yes"}"#);
    same_refusal::<EntriesQuery, today::EntriesQuery>(r#"{"list": "deny"}"#);
    same_refusal::<RecentQuery, today::RecentQuery>(r#"{"limit": 5, "kind": "x"}"#);

    // Defaults, as the daemon's.
    let q: EntriesQuery = serde_json::from_str("{}").unwrap();
    assert_eq!(q.limit, 10_000);
    let q: RecentQuery = serde_json::from_str("{}").unwrap();
    assert_eq!(q.limit, 50);
}

#[test]
fn crowdsec() {
    // A route newer than the typed API: its contract is the documented shape (docs/api.md),
    // every field present, in alphabetical order.
    let reply = groundzero_api::crowdsec::CrowdsecReply::sample();
    let text = groundzero_api::to_json(&reply);
    let value: Value = serde_json::from_str(&text).unwrap();
    let fields: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    assert_eq!(fields, sorted);
    assert_eq!(
        fields,
        [
            "consecutive_errors",
            "decisions",
            "delta_apply_seconds",
            "delta_fetch_seconds",
            "enabled",
            "entries",
            "error",
            "guard_refusals",
            "invalid",
            "lapi_url",
            "last_attempt",
            "last_startup_pull",
            "last_success",
            "pull_errors",
            "pulls",
            "push",
            "refused",
            "startup_apply_seconds",
            "startup_fetch_seconds",
        ]
    );
    assert_eq!(value["entries"]["crowdsec:cscli"]["range"], 1);
    let push: Vec<&str> = value["push"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = push.clone();
    sorted.sort_unstable();
    assert_eq!(push, sorted, "push's fields in alphabetical order");
    assert!(push.contains(&"pushed_alerts") && push.contains(&"queued"));
    // The summary `GET /v1/feeds` and `GET /v1/stats` carry (absent when not configured, so
    // their older contracts above hold).
    let summary = groundzero_api::crowdsec::CrowdsecSummary::from(&reply);
    let stats = groundzero_api::status::StatsReply {
        crowdsec: Some(summary.clone()),
        ..groundzero_api::status::StatsReply::sample()
    };
    let value: Value = serde_json::from_str(&groundzero_api::to_json(&stats)).unwrap();
    assert_eq!(value["crowdsec"]["decisions"], 3);
    assert_eq!(value["crowdsec"]["pushed_alerts"], 7);
    assert_eq!(value["crowdsec"]["pull"], true);
    let back: groundzero_api::status::StatsReply =
        serde_json::from_str(&groundzero_api::to_json(&stats)).unwrap();
    assert_eq!(back.crowdsec, Some(summary));
    let back: groundzero_api::crowdsec::CrowdsecReply = serde_json::from_str(&text).unwrap();
    assert_eq!(back, reply);
}

// ---- every route has its contract -------------------------------------------------------------

#[test]
fn every_route_is_covered() {
    // The routes of daemon/api.rs's router (journey.rs's handlers are mounted there); the
    // tests above cover each. A new route must be added to `endpoints::ALL` and here.
    let covered = [
        "/v1/health",
        "/v1/stats",
        "/v1/entries",
        "/v1/block",
        "/v1/unblock",
        "/v1/allow",
        "/v1/unallow",
        "/v1/why/{address}",
        "/v1/guard",
        "/v1/monitor",
        "/v1/import",
        "/v1/feeds",
        "/v1/crowdsec",
        "/v1/journey",
        "/v1/journey/recent",
        "/v1/journey/events",
        "/v1/journey/history",
        "/v1/journey/ab",
        "/v1/journey/claims",
        "/v1/feeds/{name}/refresh",
        "/v1/capture",
    ];
    let routes: Vec<&str> = groundzero_api::endpoints::ALL
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(routes, covered);
    assert_eq!(groundzero_api::endpoints::why("::1"), "/v1/why/::1");
    assert_eq!(
        groundzero_api::endpoints::feed_refresh("spamhaus"),
        "/v1/feeds/spamhaus/refresh"
    );
}

// ---- the journey's A/B and claims ------------------------------------------------------------

#[test]
fn ab_and_claims_round_trip_and_name_their_fields() {
    use groundzero_api::{
        journey_ab::{AbReply, AbRequest},
        journey_claims::ClaimsReply,
        sample::Sample,
    };
    let reply = AbReply::sample();
    let text = groundzero_api::to_json(&reply);
    let value: Value = serde_json::from_str(&text).unwrap();
    let run = &value["last"]["runs"][1];
    assert_eq!(run["xdp_attached"], false);
    assert_eq!(run["stages"][0]["name"], "wire_to_stack");
    assert!(run["stages"][0]["p50"]["lo_ns"].is_number());
    assert_eq!(value["last"]["blocked"][0]["name"], "xdp_drop");
    assert_eq!(serde_json::from_str::<AbReply>(&text).unwrap(), reply);
    assert!(serde_json::from_str::<AbRequest>(r#"{"probes":10,"flood":1}"#).is_err());
    let claims = ClaimsReply::sample();
    let text = groundzero_api::to_json(&claims);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["claims"][0]["name"], "fiber_to_app");
    assert!(value["claims"][0]["measured_ns"].is_number());
    assert_eq!(serde_json::from_str::<ClaimsReply>(&text).unwrap(), claims);
}
