//! Capture through BPF_PROG_TEST_RUN: the program sends what the filter admits, with the right
//! metadata and bytes, keeps to its rate, and the capture bit is off again afterwards.
mod common;

use std::{net::Ipv4Addr, time::Duration};

use groundzero::{
    capture::{CaptureFilter, CaptureRecord},
    parse_entry, Error, Reason,
};
use groundzero_common::maps::Config;
use groundzero_lab::craft;

const BLOCKED_NET: &str = "198.18.0.0/24";

fn drain(reader: &mut groundzero::capture::CaptureReader) -> Vec<CaptureRecord> {
    let mut all = Vec::new();
    for _ in 0..5 {
        let got = reader.poll(Duration::from_millis(50)).unwrap();
        if got.is_empty() && !all.is_empty() {
            break;
        }
        all.extend(got);
    }
    all
}

#[test]
fn capture_sends_admitted_packets_with_their_verdict_and_clears_its_bit() {
    let mut shield = common::shield();
    shield.block(parse_entry(BLOCKED_NET).unwrap()).unwrap();
    let blocked = craft::udp4(Ipv4Addr::new(198, 18, 0, 5), b"blocked");
    let passed = craft::udp4(Ipv4Addr::new(198, 18, 1, 5), b"passed");
    let filter = CaptureFilter {
        passes: true,
        snaplen: 20,
        ..Default::default()
    };
    let mut reader = shield.start_capture(&filter).unwrap();
    assert!(Config::capture_in(shield.config().unwrap().flags));
    // One capture at a time.
    assert!(matches!(
        shield.start_capture(&filter),
        Err(Error::CaptureRunning)
    ));
    shield.test_run(&blocked).unwrap();
    shield.test_run(&passed).unwrap();
    let got = drain(&mut reader);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].reason(), Some(Reason::BlockedCidr));
    assert_eq!(got[0].data, blocked[..20]);
    assert_eq!(got[0].meta.packet_len as usize, blocked.len());
    assert_eq!(got[1].reason(), Some(Reason::NoMatch));
    assert_eq!(got[1].data, passed[..20]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        now.abs_diff(got[0].unix_ns) < 5_000_000_000,
        "{now} vs {}",
        got[0].unix_ns
    );
    drop(reader);
    assert!(!Config::capture_in(shield.config().unwrap().flags));

    // A source filter and drops only: the passed packet and other sources stay out.
    let filter = CaptureFilter {
        source: Some(parse_entry("198.18.0.4/30").unwrap()),
        ..Default::default()
    };
    let mut reader = shield.start_capture(&filter).unwrap();
    let other = craft::udp4(Ipv4Addr::new(198, 18, 0, 9), b"other");
    for frame in [&blocked, &passed, &other] {
        shield.test_run(frame).unwrap();
    }
    let got = drain(&mut reader);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].data, blocked[..got[0].data.len()]);
    let lost = reader.stop().unwrap();
    assert_eq!(lost.rate_limited + lost.buffer_full, 0);
    assert!(!Config::capture_in(shield.config().unwrap().flags));
}

#[test]
fn a_flood_is_held_to_the_rate_and_the_rest_counted_lost() {
    let mut shield = common::shield();
    shield.block(parse_entry(BLOCKED_NET).unwrap()).unwrap();
    let blocked = craft::udp4(Ipv4Addr::new(198, 18, 0, 5), b"blocked");
    let filter = CaptureFilter {
        rate_pps: 100,
        ..Default::default()
    };
    let mut reader = shield.start_capture(&filter).unwrap();
    // 20,000 runs take well under a second. Each CPU's share of the rate starts as its burst
    // (a tenth of a second) and earns while the runs go on. The runs start on one CPU, but when
    // the kernel lets other work in between them it re-enables migration, and they may finish
    // on the other CPU, whose bucket is full too (seen under CI load: 10 captured, 5 + 5). So
    // the bound is the whole rate's: every CPU's burst plus what all of them earn, by the wall
    // clock (the kernel's own timing of the runs leaves out the times it let other work run).
    let started = std::time::Instant::now();
    shield.test_run_repeat(&blocked, 20_000).unwrap();
    let elapsed_s = started.elapsed().as_secs_f64();
    let got = drain(&mut reader);
    let lost = reader.lost().unwrap();
    let allowed = 100.0 * (0.1 + elapsed_s) + 2.0;
    assert!(
        (got.len() as f64) <= allowed && !got.is_empty(),
        "{} captured, at most {allowed} allowed",
        got.len()
    );
    assert_eq!(
        got.len() as u64 + lost.rate_limited + lost.buffer_full,
        20_000
    );
    let reported: u64 =
        got.iter().map(|r| r.lost_before).sum::<u64>() + reader.unreported_lost().unwrap();
    assert_eq!(reported, lost.rate_limited + lost.buffer_full);
}
