//! `groundzero capture` against a real daemon attached to a veth in a namespace, with real
//! UDP traffic: tshark reads the file, and its packets and comments are what the test sent and
//! what groundzero decided; filters hold only what they admit; a flood stays within the rate
//! with the losses reported; the kernel's capture bit is off afterwards; bad parameters are
//! 400s naming the parameter. Addresses from 198.18.0.0/15 and 2001:2::/48 only.
mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    daemon::TestDaemon,
    topology::{Topology, BAD, FLOOD, GOOD, NODE},
};
use groundzero_api::client::ClientError;
use groundzero_common::maps::Config;
use hyper::Method;
use serde_json::json;

/// A `groundzero capture` running against `d`, writing `file`.
fn start_capture(d: &TestDaemon, file: &Path, args: &[&str]) -> Child {
    let _ = std::fs::remove_file(file);
    let child = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("capture")
        .arg("-w")
        .arg(file)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon sends the section header once the kernel is capturing; the CLI writes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the capture did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn finish(child: Child) -> String {
    let out: Output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "capture failed: {stderr}");
    stderr
}

/// `tshark -r file -T fields` with these fields, one Vec per packet.
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// Packets by source address (IPv4 or IPv6 column), with their comments.
fn by_source(rows: &[Vec<String>]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let src = if row[1].is_empty() { &row[2] } else { &row[1] };
        out.entry(src.clone()).or_default().push(row[0].clone());
    }
    out
}

fn capture_bit(pin_dir: &Path) -> bool {
    let data = aya::maps::MapData::from_pin(pin_dir.join("maps").join("config")).unwrap();
    let map: aya::maps::Array<_, Config> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
    Config::capture_in(map.get(&0, 0).unwrap().flags)
}

fn node_setup(tag: &str) -> (Topology, TestDaemon, PathBuf) {
    let topo = Topology::new(tag);
    let config = format!(
        "interfaces = [\"{}\"]\n[guard]\nprotect_management = false\n",
        topo.node_if
    );
    let d = TestDaemon::start_in(&topo.node, &config);
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [BAD[0]], "reason": "port scan"})),
    );
    d.ok(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "x", "text": format!("{}\n2001:2:7::/120\n", FLOOD[0])})),
    );
    let file = d.dir.join("capture.pcapng");
    (topo, d, file)
}

#[test]
fn the_capture_holds_what_was_sent_with_what_groundzero_decided() {
    let (topo, d, file) = node_setup("cap1");
    let v4 = SocketAddr::new(NODE[0].parse().unwrap(), 7100);
    let v6 = SocketAddr::new(NODE[1].parse().unwrap(), 7100);

    let child = start_capture(
        &d,
        &file,
        &[
            "-i",
            &topo.node_if,
            "--verdict",
            "all",
            "--count",
            "12",
            "--duration",
            "10s",
        ],
    );
    assert!(capture_bit(&d.pin_dir), "the bit is on while capturing");
    // A second capture waits its turn: 409, with the reason.
    match d.call(Method::GET, "/v1/capture?count=1", None) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 409);
            assert!(message.contains("already running"), "{message}");
        }
        other => panic!("a second capture: {other:?}"),
    }
    topo.send(GOOD[0], v4, 3);
    topo.send(BAD[0], v4, 3);
    topo.send(BAD[1], v6, 3); // in the feed's 2001:2:7::/120
    topo.send(GOOD[1], v6, 3); // also in it
    let stderr = finish(child);
    assert!(stderr.contains("12 packets captured, 0 lost"), "{stderr}");
    assert!(!capture_bit(&d.pin_dir), "the bit is off after the capture");

    let rows = tshark(
        &file,
        &[
            "frame.comment",
            "ip.src",
            "ipv6.src",
            "frame.interface_name",
            "frame.packet_flags_direction",
            "udp.dstport",
        ],
    );
    assert_eq!(rows.len(), 12, "{rows:?}");
    for row in &rows {
        assert_eq!(row[3], topo.node_if, "{row:?}");
        assert_eq!(row[4], "0x00000001", "inbound: {row:?}"); // epb_flags direction 01
        assert_eq!(row[5], "7100", "{row:?}");
    }
    // What an operator sees (README "Evidence" shows this, from a run of this test).
    let summary = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-o", "gui.column.format:\"No.\",\"%m\",\"Source\",\"%s\",\"Protocol\",\"%p\",\"Length\",\"%L\",\"Comment\",\"%Cus:frame.comment\""])
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&summary.stdout));
    let got = by_source(&rows);
    let bad6_entry = "2001:2:7::/120";
    let expect = BTreeMap::from([
        (
            GOOD[0].to_string(),
            vec![format!("verdict=pass reason=no_match src={}", GOOD[0]); 3],
        ),
        (
            BAD[0].to_string(),
            vec![
                format!(
                    "verdict=drop reason=blocked_exact src={b} entry={b}/32 source=api why=\"port scan\"",
                    b = BAD[0]
                );
                3
            ],
        ),
        (
            BAD[1].to_string(),
            vec![
                format!(
                    "verdict=drop reason=blocked_cidr src={} entry={bad6_entry} source=feed:x why=\"\"",
                    BAD[1]
                );
                3
            ],
        ),
        (
            GOOD[1].to_string(),
            vec![
                format!(
                    "verdict=drop reason=blocked_cidr src={} entry={bad6_entry} source=feed:x why=\"\"",
                    GOOD[1]
                );
                3
            ],
        ),
    ]);
    assert_eq!(got, expect);

    // Filters: a source prefix and drops only; then passes only.
    let child = start_capture(
        &d,
        &file,
        &[
            "--source",
            &format!("{}/32", BAD[0]),
            "--count",
            "3",
            "--duration",
            "10s",
        ],
    );
    topo.send(GOOD[0], v4, 2);
    topo.send(BAD[1], v6, 2);
    topo.send(BAD[0], v4, 3);
    finish(child);
    let got = by_source(&tshark(&file, &["frame.comment", "ip.src", "ipv6.src"]));
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![BAD[0]], "{got:?}");
    assert_eq!(got[BAD[0]].len(), 3);

    let child = start_capture(
        &d,
        &file,
        &["--verdict", "pass", "--count", "2", "--duration", "10s"],
    );
    topo.send(BAD[0], v4, 2);
    topo.send(BAD[1], v6, 2);
    topo.send(GOOD[0], v4, 2);
    finish(child);
    let got = by_source(&tshark(&file, &["frame.comment", "ip.src", "ipv6.src"]));
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![GOOD[0]], "{got:?}");
    assert!(got[GOOD[0]].iter().all(|c| c.starts_with("verdict=pass")));
    assert!(!capture_bit(&d.pin_dir));
}

#[test]
fn a_flood_stays_within_the_rate_and_the_losses_are_reported() {
    let (topo, d, file) = node_setup("cap2");
    let rate = 50;
    let child = start_capture(
        &d,
        &file,
        &[
            "--rate",
            &rate.to_string(),
            "--count",
            "100000",
            "--duration",
            "3s",
            "--snaplen",
            "64",
        ],
    );
    let dst = SocketAddr::new(NODE[0].parse().unwrap(), 7200);
    let started = Instant::now();
    // A bounded flood from a blocked source, spread over about two seconds.
    for _ in 0..20 {
        topo.send(FLOOD[0], dst, 1000);
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_millis(2500) {
            break;
        }
    }
    let stderr = finish(child);
    assert!(!capture_bit(&d.pin_dir), "the bit is off after the capture");
    let rows = tshark(
        &file,
        &[
            "frame.time_epoch",
            "frame.drop_count",
            "ip.src",
            "frame.cap_len",
        ],
    );
    assert!(rows.len() >= 2, "{rows:?}");
    // Frames shorter than the snap length are kept whole.
    assert!(
        rows.iter()
            .all(|r| r[2] == FLOOD[0] && r[3].parse::<u32>().is_ok_and(|n| n <= 64)),
        "{rows:?}"
    );
    // Per second of kernel time: the rate plus each CPU's burst (a tenth of its share).
    let cpus = aya::util::online_cpus().unwrap().len() as u64;
    let burst = cpus * (rate / cpus / 10).max(1);
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &rows {
        let t: f64 = r[0].parse().unwrap();
        *per_second.entry(t as u64).or_default() += 1;
    }
    for (second, n) in &per_second {
        assert!(
            *n <= rate + burst,
            "{n} packets in second {second}: {per_second:?}"
        );
    }
    let dropped: u64 = rows.iter().filter_map(|r| r[1].parse::<u64>().ok()).sum();
    assert!(dropped > 1000, "losses reported as drop counts: {dropped}");
    let summary = format!("{} packets captured, {dropped} lost", rows.len());
    assert!(stderr.contains(&summary), "{stderr} vs {summary}");
}

#[test]
fn bad_parameters_are_400s_naming_the_parameter() {
    let d = TestDaemon::start("[guard]\nprotect_management = false\n");
    for (query, name) in [
        ("count=0", "count"),
        ("count=lots", "count"),
        ("snaplen=70000", "snaplen"),
        ("rate=0", "rate"),
        ("duration=forever", "duration"),
        ("duration=2h", "duration"),
        ("verdict=maybe", "verdict"),
        ("reason=blocked_cidr,nope", "reason"),
        ("source=198.18.0.0%2F99", "source"),
        ("interface=nosuch0", "interface"),
    ] {
        match d.call(Method::GET, &format!("/v1/capture?{query}"), None) {
            Err(ClientError::Api { status, message }) => {
                assert_eq!(status, 400, "{query}: {message}");
                assert!(
                    message.starts_with(&format!("{name}:")),
                    "{query}: {message}"
                );
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    assert!(!capture_bit(&d.pin_dir));
    // A client that goes away ends the capture: the bit goes off well before the duration.
    let file = d.dir.join("abandoned.pcapng");
    let mut child = start_capture(&d, &file, &["--duration", "60s"]);
    assert!(capture_bit(&d.pin_dir));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while capture_bit(&d.pin_dir) {
        assert!(Instant::now() < deadline, "the capture outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... and the next capture may start.
    let child = start_capture(&d, &file, &["--duration", "200ms"]);
    let stderr = finish(child);
    assert!(stderr.contains("0 packets captured"), "{stderr}");
    // With no daemon, the CLI says so and how to start one.
    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .args(["--socket", "/nonexistent/api.sock", "capture", "-w", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("groundzero run"), "{stderr}");
}
