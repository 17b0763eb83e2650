//! The snapshot, its encoding and the endpoint.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::http::StatusCode;
use groundzero::{
    counters::Counters,
    error::{Error, ListKind},
    shield::{ActiveMode, ListEntry, ProgramStats},
};
use groundzero_common::{maps::Counter, Reason};
use ipnet::IpNet;

use super::encode::MAX_ORIGINS;
use super::scrape::Scraper;
use super::*;
use crate::records::FeedStatus;

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
                list: Side::Block,
                family: Family::V4,
                source: "manual".into(),
                entries: 3,
            },
            ListCount {
                list: Side::Block,
                family: Family::V6,
                source: "feed:spamhaus".into(),
                entries: 7,
            },
        ],
        maps: vec![MapFill {
            map: ListKind::BlockExact,
            family: Family::V4,
            entries: 3,
            capacity: 1024,
        }],
        failed_inserts: 2,
        program: ProgramStats {
            run_time_ns: 1_500_000_000,
            run_count: 51,
        },
        feeds: vec![
            FeedMetrics {
                status: FeedStatus {
                    name: "spamhaus".into(),
                    last_success: Some(1_700_000_000),
                    entries: 7,
                    refused: 2,
                    ..FeedStatus::default()
                },
                refresh_interval: Some(Duration::from_secs(3600)),
            },
            FeedMetrics {
                status: FeedStatus {
                    name: "never".into(),
                    ..FeedStatus::default()
                },
                refresh_interval: None,
            },
        ],
        crowdsec: Some(CrowdsecMetrics {
            status: groundzero_api::crowdsec::CrowdsecReply {
                enabled: true,
                entries: [(
                    "crowdsec:cscli".to_string(),
                    [("ip".to_string(), 2), ("range".to_string(), 1)].into(),
                )]
                .into(),
                pulls: 42,
                pull_errors: 3,
                consecutive_errors: 1,
                last_success: Some(1_700_000_100),
                push: Some(groundzero_api::crowdsec::CrowdsecPushReply {
                    pushed_alerts: 7,
                    push_errors: 2,
                    queued: 4,
                    dropped: 1,
                    last_push: Some(1_700_000_050),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pull_interval: Some(Duration::from_secs(10)),
        }),
        guard_refusals: vec![("api".into(), 3)],
        journal_damage: 1,
        top_blocked: vec![BlockedSource {
            net: net("198.51.100.7/32"),
            hits: 30,
        }],
        drops_by_origin: vec![("feed:spamhaus".into(), 25), ("auto-ban".into(), 5)],
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
    has(
        "groundzero_packets_total{interface=\"eth0\",verdict=\"drop\",reason=\"blocked_exact\"} 30",
    );
    has(
        "groundzero_bytes_total{interface=\"eth0\",verdict=\"drop\",reason=\"blocked_exact\"} 2220",
    );
    has("groundzero_packets_total{interface=\"eth0\",verdict=\"pass\",reason=\"no_match\"} 20");
    has("groundzero_packets_total{interface=\"eth0\",verdict=\"pass\",reason=\"monitor_cidr\"} 0");
    has("groundzero_program_packets_total{verdict=\"drop\",reason=\"blocked_exact\"} 31");
    has("groundzero_interface_attached{interface=\"eth0\",mode=\"native\"} 1");
    has("groundzero_interface_attached{interface=\"eth1\",mode=\"none\"} 0");
    has("groundzero_monitor_mode 0");
    has("# TYPE groundzero_origin_dropped_packets gauge");
    has("groundzero_origin_dropped_packets{origin=\"feed:spamhaus\"} 25");
    has("groundzero_origin_dropped_packets{origin=\"auto-ban\"} 5");
    has("groundzero_crowdsec_up 0");
    has("groundzero_crowdsec_decisions{source=\"crowdsec:cscli\",scope=\"ip\"} 2");
    has("groundzero_crowdsec_decisions{source=\"crowdsec:cscli\",scope=\"range\"} 1");
    has("groundzero_crowdsec_pulls_total 42");
    has("groundzero_crowdsec_pull_errors_total 3");
    has("groundzero_crowdsec_last_success_timestamp_seconds 1700000100.0");
    has("groundzero_crowdsec_pull_interval_seconds 10.0");
    has("groundzero_crowdsec_pushed_alerts_total 7");
    has("groundzero_crowdsec_push_errors_total 2");
    has("groundzero_crowdsec_push_queue_length 4");
    has("groundzero_crowdsec_push_dropped_total 1");
    has("groundzero_crowdsec_push_last_success_timestamp_seconds 1700000050.0");
    has("groundzero_list_entries{list=\"block\",family=\"ipv4\",source=\"manual\"} 3");
    has("groundzero_list_entries{list=\"block\",family=\"ipv6\",source=\"feed:spamhaus\"} 7");
    has("groundzero_map_entries{map=\"block_exact\",family=\"ipv4\"} 3");
    has("groundzero_map_max_entries{map=\"block_exact\",family=\"ipv4\"} 1024");
    has("groundzero_failed_inserts_total 2");
    has("# UNIT groundzero_xdp_run_time_seconds seconds");
    has("groundzero_xdp_run_time_seconds_total 1.5");
    has("groundzero_xdp_runs_total 51");
    has("groundzero_feed_refresh_success{feed=\"spamhaus\"} 1");
    has("groundzero_feed_last_success_timestamp_seconds{feed=\"spamhaus\"} 1700000000.0");
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
fn origins_are_bounded_keeping_the_most_drops() {
    let mut s = sample();
    s.drops_by_origin = (0..MAX_ORIGINS as u64 + 20)
        .map(|i| (format!("app:a{i}"), i))
        .collect();
    let text = encode(&s);
    let lines: Vec<&str> = samples(&text)
        .into_iter()
        .filter(|l| l.starts_with("groundzero_origin_dropped_packets{"))
        .collect();
    assert_eq!(lines.len(), MAX_ORIGINS);
    assert!(lines
        .iter()
        .any(|l| l.ends_with(&format!(" {}", MAX_ORIGINS + 19))));
    assert!(
        !lines.iter().any(|l| l.contains("origin=\"app:a0\"")),
        "{lines:?}"
    );
}

#[test]
fn label_values_are_escaped_and_duplicates_merged() {
    let mut snapshot = sample();
    snapshot.feeds = vec![FeedMetrics {
        status: FeedStatus {
            name: "a\"b\\c\nd".into(),
            entries: 1,
            ..FeedStatus::default()
        },
        refresh_interval: None,
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
