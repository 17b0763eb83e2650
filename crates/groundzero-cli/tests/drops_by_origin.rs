//! Drops by origin: the daemon sums its blocked entries' hit counters by each entry's holders
//! (`api`, `app:<name>`, `auto-ban`, `feed:<name>`) into `/metrics` and `groundzero stats`.
//! The packets run through the real XDP program on the daemon's own pinned maps.
mod common;

use std::{net::IpAddr, process::Command};

use common::daemon::TestDaemon;
use groundzero::{Action, Shield, ShieldOptions};
use groundzero_lab::craft::{self, L4};
use hyper::Method;
use serde_json::json;

fn udp_from(src: &str) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    craft::ip_packet(src, "198.51.100.1".parse().unwrap(), L4::UDP, b"origin")
}

#[test]
fn drops_are_counted_by_the_origin_of_the_entries_that_dropped_them() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = TestDaemon::start(&format!(
        "[guard]\nprotect_management = false\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         cache_for = \"0s\""
    ));
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.40.1"]})),
    );
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.40.2"], "source": "app:validator"})),
    );
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.40.3"], "source": "auto-ban", "ttl": "1h"})),
    );
    // `busy` also holds the api's entry: its drops count for both holders.
    d.ok(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "busy", "text": "198.18.42.0/24\n198.18.40.1\n"})),
    );
    d.ok(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "quiet", "text": "198.18.43.0/24\n"})),
    );

    // The same maps the daemon attached, through a second copy of the program.
    let shield = Shield::load(ShieldOptions {
        pin_dir: Some(d.pin_dir.clone()),
        ..ShieldOptions::default()
    })
    .unwrap();
    for (src, n) in [
        ("198.18.40.1", 3),
        ("198.18.40.2", 5),
        ("198.18.40.3", 7),
        ("198.18.42.9", 11),
        ("198.18.50.1", 13),
    ] {
        let want = if src == "198.18.50.1" {
            Action::Pass
        } else {
            Action::Drop
        };
        for _ in 0..n {
            assert_eq!(shield.test_run(&udp_from(src)).unwrap(), want, "{src}");
        }
    }

    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let mut by_origin: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("groundzero_origin_dropped_packets{origin=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(o, n)| (o.to_string(), n.to_string()))
        .collect();
    by_origin.sort();
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(o, n)| (o.to_string(), n.to_string()))
            .collect()
    };
    assert_eq!(
        by_origin,
        expect(&[
            ("api", "3"),
            ("app:validator", "5"),
            ("auto-ban", "7"),
            ("feed:busy", "14"),
            ("feed:quiet", "0"),
        ]),
        "{text}"
    );

    // `groundzero stats` shows the same numbers.
    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("stats")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = String::from_utf8(out.stdout).unwrap();
    let section = stats
        .split("drops by origin:")
        .nth(1)
        .unwrap_or_else(|| panic!("no drops by origin in\n{stats}"));
    for (origin, n) in [
        ("feed:busy", 14),
        ("auto-ban", 7),
        ("app:validator", 5),
        ("api", 3),
    ] {
        let line = section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(origin))
            .unwrap_or_else(|| panic!("no {origin} in\n{stats}"));
        assert_eq!(
            line.split_whitespace().last(),
            Some(n.to_string().as_str()),
            "{stats}"
        );
    }
}
