//! A typical value of every request and reply, as in docs/api.md. The contract tests compare
//! them with what the daemon's code builds, and the page's test collects their field names:
//! every optional field is set, every list has an element, so each sample shows every field.

use groundzero_common::{journey::Stage, Action, Reason};

use crate::{
    counters::{CounterView, ReasonCounters},
    crowdsec::{CrowdsecPushReply, CrowdsecReply},
    errors::ErrorBody,
    feeds::{FeedFormat, FeedStatus, FeedsReply, ImportReply, ImportRequest, RefreshReply},
    guard::{GuardReply, ProtectedAddress},
    journey::{
        Cost, DecidingEntry, DropSite, EntryResolution, HistoryMinute, HistoryReply, Hop, HopStage,
        Journey, JourneySummary, KernelDropCount, MatchCounts, MissingStage, NotObserved,
        Observability, Outcomes, RateBasis, Rates, RecentQuery, RecentReply, StageLatency,
        StageRate, Totals, TraceStatus, TracingReply, TracingRequest, VerdictTiming,
    },
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, EntryKind, EntryOutcome, EntryStatus,
        EntryView, Family, Holder, RemoveReply, RemoveRequest, Side, WhyReply,
    },
    source::{Source, SourceKind},
    status::{
        Capacity, HealthReply, InterfaceStats, ListCount, MonitorReply, MonitorRequest,
        OriginDrops, StatsReply, XdpMode,
    },
};

/// A typical value, with every optional field set.
pub trait Sample {
    /// The value.
    fn sample() -> Self;
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("sample prefixes are valid")
}

impl Sample for ErrorBody {
    fn sample() -> Self {
        ErrorBody::new("entries[0]: `198.51.100.7/33` is not an address or prefix")
    }
}

impl Sample for HealthReply {
    fn sample() -> Self {
        HealthReply::ok()
    }
}

impl Sample for AddRequest {
    fn sample() -> Self {
        AddRequest {
            entries: vec!["198.51.100.7".into(), "203.0.113.0/24".into()],
            reason: Some("scanner".into()),
            ttl: Some("1h".into()),
            source: Some("app:validator-node".into()),
            force: true,
            all_or_nothing: true,
        }
    }
}

impl Sample for AddReply {
    fn sample() -> Self {
        AddReply {
            added: 1,
            applied: 2,
            entries: 3,
            error: Some("blocking 2001:db8::/32 would cover 2001:db8::53/128 (a DNS resolver of this host); pass force to do it anyway".into()),
            expires: Some(1_795_472_911),
            refused: 1,
            results: vec![
                EntryOutcome {
                    entry: net("198.51.100.7/32"),
                    status: EntryStatus::Added,
                },
                EntryOutcome {
                    entry: net("203.0.113.0/24"),
                    status: EntryStatus::Held,
                },
                EntryOutcome {
                    entry: net("2001:db8::/32"),
                    status: EntryStatus::Refused {
                        why: "blocking 2001:db8::/32 would cover 2001:db8::53/128 (a DNS resolver of this host)".into(),
                    },
                },
            ],
        }
    }
}

impl Sample for RemoveRequest {
    fn sample() -> Self {
        RemoveRequest {
            entries: vec!["198.51.100.7".into()],
            source: Some("manual".into()),
        }
    }
}

impl Sample for RemoveReply {
    fn sample() -> Self {
        RemoveReply {
            removed: vec![net("198.51.100.7/32")],
            still_held: vec![net("203.0.113.0/24")],
        }
    }
}

impl Sample for Holder {
    fn sample() -> Self {
        Holder {
            created: 1_795_469_311,
            expires: Some(1_795_472_911),
            reason: Some("scanner".into()),
            source: Source::Api,
        }
    }
}

impl Sample for EntryView {
    fn sample() -> Self {
        EntryView {
            entry: net("198.51.100.7/32"),
            hits: 1234,
            holders: vec![
                Holder::sample(),
                Holder {
                    created: 1_795_460_000,
                    expires: None,
                    reason: None,
                    source: Source::Feed("spamhaus".into()),
                },
            ],
            kind: EntryKind::Exact,
            last_hit_seconds_ago: Some(0.4),
            list: Side::Block,
        }
    }
}

impl Sample for EntriesQuery {
    fn sample() -> Self {
        EntriesQuery {
            list: Some(Side::Block),
            source: Some("feed".into()),
            limit: 200,
        }
    }
}

impl Sample for EntriesReply {
    fn sample() -> Self {
        EntriesReply {
            entries: vec![EntryView::sample()],
        }
    }
}

impl Sample for WhyReply {
    fn sample() -> Self {
        WhyReply {
            address: "198.19.7.9".parse().expect("valid"),
            also_matching: vec![EntryView {
                entry: net("198.19.0.0/16"),
                hits: 0,
                holders: vec![Holder::sample()],
                kind: EntryKind::Prefix,
                last_hit_seconds_ago: None,
                list: Side::Block,
            }],
            matched: Some(EntryView {
                entry: net("198.19.7.0/24"),
                hits: 12,
                holders: vec![Holder {
                    source: Source::Manual,
                    ..Holder::sample()
                }],
                kind: EntryKind::Prefix,
                last_hit_seconds_ago: Some(3.5),
                list: Side::Allow,
            }),
            monitor: false,
            reason: Reason::Allowlisted,
            verdict: Action::Pass,
        }
    }
}

impl Sample for GuardReply {
    fn sample() -> Self {
        GuardReply {
            allowlist_entries: 3,
            configured: vec![net("203.0.113.0/28")],
            error: Some("reading /proc/net/tcp: permission denied".into()),
            management: vec![
                ProtectedAddress {
                    entry: net("192.0.2.10/32"),
                    why: "an address of this host".into(),
                },
                ProtectedAddress {
                    entry: net("198.51.100.4/32"),
                    why: "the peer of an established SSH session".into(),
                },
            ],
            protect_management: true,
            read_seconds_ago: Some(0.8),
            rate_exempt: vec![net("192.0.2.10/32"), net("203.0.113.0/28")],
            refusals: [
                (SourceKind::Api, 2),
                (SourceKind::AutoBan, 14),
                (SourceKind::Feed, 1),
            ]
            .into_iter()
            .collect(),
            ssh_port: 22,
            widest_v4: 8,
            widest_v6: 32,
        }
    }
}

impl Sample for MonitorRequest {
    fn sample() -> Self {
        MonitorRequest { enabled: true }
    }
}

impl Sample for MonitorReply {
    fn sample() -> Self {
        MonitorReply { monitor: true }
    }
}

impl Sample for ImportRequest {
    fn sample() -> Self {
        ImportRequest {
            name: "spamhaus-local".into(),
            format: FeedFormat::Spamhaus,
            text: "203.0.113.0/24 ; SBL1\n".into(),
            force: true,
        }
    }
}

impl Sample for ImportReply {
    fn sample() -> Self {
        ImportReply {
            added: 10,
            entries: 12,
            name: "spamhaus-local".into(),
            removed: 3,
            seconds: 0.25,
        }
    }
}

impl Sample for FeedStatus {
    fn sample() -> Self {
        FeedStatus {
            entries: 1200,
            error: Some("feed spamhaus: HTTP 503".into()),
            format: FeedFormat::Spamhaus,
            last_attempt: Some(1_795_469_400),
            last_success: Some(1_795_469_311),
            name: "spamhaus".into(),
            refused: 1,
            url: "https://www.spamhaus.org/drop/drop.txt".into(),
        }
    }
}

impl Sample for FeedsReply {
    fn sample() -> Self {
        FeedsReply {
            crowdsec: None,
            feeds: vec![FeedStatus::sample()],
        }
    }
}

impl Sample for CrowdsecReply {
    fn sample() -> Self {
        CrowdsecReply {
            consecutive_errors: 1,
            decisions: 3,
            delta_apply_seconds: Some(0.004),
            delta_fetch_seconds: Some(0.002),
            enabled: true,
            entries: [(
                "crowdsec:cscli".to_string(),
                [("ip".to_string(), 2), ("range".to_string(), 1)].into(),
            )]
            .into(),
            error: Some(
                "GET http://127.0.0.1:8080/v1/decisions/stream: HTTP 403 (the LAPI refused \
                 the bouncer key): {\"message\":\"access forbidden\"}"
                    .into(),
            ),
            guard_refusals: 1,
            invalid: 0,
            lapi_url: "http://127.0.0.1:8080".into(),
            last_attempt: Some(1_796_170_021),
            last_startup_pull: Some(1_796_169_001),
            last_success: Some(1_796_170_011),
            pull_errors: 1,
            pulls: 42,
            push: Some(CrowdsecPushReply {
                consecutive_errors: 0,
                dropped: 0,
                error: None,
                lapi_url: "http://127.0.0.1:8080".into(),
                last_attempt: Some(1_796_170_020),
                last_push: Some(1_796_170_020),
                logins: 1,
                machine_id: "node-a".into(),
                push_errors: 0,
                pushed_alerts: 7,
                queue_capacity: 10_000,
                queued: 0,
                sources: vec!["auto-ban".into(), "app".into()],
            }),
            refused: 1,
            startup_apply_seconds: Some(0.05),
            startup_fetch_seconds: Some(0.01),
        }
    }
}

impl Sample for RefreshReply {
    fn sample() -> Self {
        RefreshReply {
            feed: Some(FeedStatus::sample()),
        }
    }
}

impl Sample for ReasonCounters {
    fn sample() -> Self {
        Reason::ALL
            .iter()
            .map(|&r| {
                let packets = 10 * (r as u64 + 1);
                (
                    r,
                    CounterView {
                        bytes: packets * 78,
                        packets,
                    },
                )
            })
            .collect()
    }
}

impl Sample for StatsReply {
    fn sample() -> Self {
        StatsReply {
            capacity: Capacity {
                allow: 16_384,
                cidr: 262_144,
                exact: 1_048_576,
            },
            counters: ReasonCounters::sample(),
            crowdsec: None,
            drops_by_origin: vec![
                OriginDrops {
                    origin: "feed:spamhaus".into(),
                    packets: 1500,
                },
                OriginDrops {
                    origin: "auto-ban".into(),
                    packets: 20,
                },
            ],
            entries: vec![
                ListCount {
                    entries: 3,
                    family: Family::V4,
                    list: Side::Block,
                    source: SourceKind::Api,
                },
                ListCount {
                    entries: 1200,
                    family: Family::V6,
                    list: Side::Block,
                    source: SourceKind::Feed,
                },
            ],
            failed_inserts: 0,
            interfaces: vec![InterfaceStats {
                adopted: true,
                counters: ReasonCounters::sample(),
                ifindex: 2,
                interface: "eth0".into(),
                mode: XdpMode::Native,
            }],
            monitor: false,
            uptime_seconds: 12,
        }
    }
}

impl Sample for TracingRequest {
    fn sample() -> Self {
        TracingRequest {
            enabled: true,
            sample_every: Some(64),
            filter: Some("udp port 7000".into()),
        }
    }
}

impl Sample for TraceStatus {
    fn sample() -> Self {
        TraceStatus {
            enabled: true,
            filter: "udp port 7000".into(),
            sample_every: 64,
            stages_missing: vec![MissingStage {
                hook: "ip_rcv_core / ip6_rcv_core".into(),
                stage: Stage::Ip,
                why: "fentry is not allowed here".into(),
            }],
        }
    }
}

impl Sample for TracingReply {
    fn sample() -> Self {
        TracingReply {
            tracing: TraceStatus::sample(),
        }
    }
}

fn latency(stage: Stage, label: &str, p50_ns: u64) -> StageLatency {
    StageLatency {
        count: 4096,
        label: label.into(),
        p50_ns,
        p99_ns: p50_ns * 3,
        stage,
    }
}

impl Sample for JourneySummary {
    fn sample() -> Self {
        JourneySummary {
            cost: Some(Cost {
                observers_cpu_ms_per_s: 12.5,
                observers_ns_per_run: Some(180.2),
                observers_runs_per_s: 69_000.0,
                window_s: 1.0,
                xdp_ns_per_packet: Some(41.3),
            }),
            cumulative: vec![
                latency(Stage::Xdp, "XDP verdict", 300),
                latency(Stage::Stack, "GRO → stack", 2_000),
                latency(Stage::Socket, "to socket queue", 9_000),
                latency(Stage::App, "queued until read", 40_000),
            ],
            drop_sites: vec![DropSite {
                count: 4,
                function: "udp_queue_rcv_one_skb".into(),
                reason: "NO_SOCKET".into(),
            }],
            journeys_skipped: 7,
            kernel_drop_reasons: vec![KernelDropCount {
                count: 4,
                reason: "NO_SOCKET".into(),
            }],
            matching: MatchCounts {
                after_end: 30,
                repeated: 12,
                unknown_id: 1,
                unseen_in_stack: 2,
            },
            nic_to_xdp: Observability {
                measured: false,
                why: Some("veth gives no RX hardware timestamp".into()),
            },
            not_observed: vec![NotObserved {
                stage: Stage::Gro,
                why: "generic XDP: the skb exists before XDP runs".into(),
            }],
            outcomes: Outcomes {
                consumed: 5,
                delivered: 20,
                incomplete: 1,
                kernel_drop: 4,
                merged: 2,
                unmatched: 3,
                xdp_drop: 100,
            },
            rates: Rates {
                app_pps: Some(1_900.0),
                dropped_pps: 10_000.0,
                filtered_dropped_pps: 1_000.0,
                filtered_passed_pps: 2_000.0,
                filtered_seen_pps: 3_000.0,
                kernel_dropped_pps: Some(100.0),
                passed_pps: 2_000.0,
                seen_pps: 12_000.0,
                socket_pps: Some(1_900.0),
                stack_pps: Some(2_000.0),
                window_s: 1.0,
            },
            stage_rates: vec![StageRate {
                basis: RateBasis::Estimate,
                pps: 1_900.0,
                population: "packets matching \"udp port 7000\"".into(),
                share: Some(0.95),
                stage: Stage::App,
            }],
            stages: vec![
                latency(Stage::Xdp, "XDP verdict", 300),
                latency(Stage::Stack, "GRO → stack", 1_700),
            ],
            totals: Totals {
                dropped: 10_000,
                filtered_dropped: 500,
                filtered_passed: 1_000,
                filtered_seen: 1_500,
                passed: 2_000,
                seen: 12_000,
            },
            tracing: TraceStatus::sample(),
            verdict: Some(VerdictTiming {
                kernel_mean_ns: Some(41.3),
                p50_ns: Some(300),
                p99_ns: Some(900),
                samples: 4096,
                span: "program entry → just before the ring write".into(),
            }),
        }
    }
}

impl Sample for Journey {
    fn sample() -> Self {
        Journey {
            drop_reason: Some("NO_SOCKET".into()),
            dst: "198.18.0.1:7000".into(),
            entry: Some(DecidingEntry {
                entry: net("198.18.0.66/32"),
                expires_unix: Some(1_795_472_911),
                reason: Some("scanner".into()),
                resolved: EntryResolution::KernelKey,
                resolved_unix_ms: 1_795_469_311_125,
                source: Some(Source::App("validator-node".into())),
            }),
            family: 4,
            hops: vec![
                Hop {
                    cpu: 1,
                    label: "XDP hook".into(),
                    stage: HopStage::At(Stage::Xdp),
                    t_ns: 0,
                },
                Hop {
                    cpu: 1,
                    label: "XDP_DROP".into(),
                    stage: HopStage::XdpVerdict,
                    t_ns: 310,
                },
            ],
            id: 42,
            interface: "veth0".into(),
            outcome: crate::journey::Outcome::XdpDrop,
            protocol: "udp".into(),
            reason: Reason::BlockedExact,
            src: "198.18.0.66:4000".into(),
            total_ns: 310,
            unix_ms: 1_795_469_311_123,
            verdict: Action::Drop,
        }
    }
}

impl Sample for crate::capture::CaptureQuery {
    fn sample() -> Self {
        crate::capture::CaptureQuery {
            count: Some("100".into()),
            duration: Some("30s".into()),
            interface: Some("eth0".into()),
            rate: Some("1000".into()),
            reason: Some("blocked_cidr,blocked_exact".into()),
            snaplen: Some("256".into()),
            source: Some("198.18.0.0/15".into()),
            verdict: Some("drop".into()),
        }
    }
}

impl Sample for RecentQuery {
    fn sample() -> Self {
        RecentQuery {
            limit: 5,
            outcome: Some("xdp_drop".into()),
        }
    }
}

impl Sample for HistoryReply {
    fn sample() -> Self {
        HistoryReply {
            minutes: vec![HistoryMinute {
                journeys: 120,
                stages: vec![latency(Stage::Xdp, "XDP verdict", 300)],
                start_unix: 1_795_469_280,
            }],
        }
    }
}

impl Sample for RecentReply {
    fn sample() -> Self {
        RecentReply {
            journeys: vec![Journey::sample()],
        }
    }
}
