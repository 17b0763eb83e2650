//! Upgrading across a change of map layout: pins made by an older build (commit e477daf, map
//! layout 1, no stamp) are migrated by this build's daemon (layout [`layout::LAYOUT`]) while a blocked source
//! floods, and pins of an unknown, newer layout are refused.
//!
//! The older binary comes from `scripts/build-previous.sh` (scripts/test.sh runs it before the
//! tests); without it these tests fail, naming the script.
//!
//! Every daemon runs in the node namespace of a veth pair of its test; all traffic is between
//! the test's namespaces (198.18.0.0/15, 2001:2::/48), bounded in count and time.
mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{HashMap, LpmTrie, Map, MapData};
use common::{
    child::{self, ChildDaemon, UdpTally, Workdir},
    topology::{Topology, BAD, FLOOD, GOOD, NODE},
    wait_for,
};
use groundzero::{bpf::layout, lists::Family, lists::ListKind, IpNet, Shield, ShieldOptions};
use groundzero_common::maps::EntryStats;
use groundzero_lab::harness;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The commit whose binary makes layout-1 pins (the last one before the stamp).
const PREVIOUS: &str = "e477daf";

/// The older build's binary, or a failure that says how to build it.
fn previous_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/previous")
        .join(PREVIOUS)
        .join("groundzero");
    assert!(
        path.is_file(),
        "{} is missing: build it with scripts/build-previous.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Every entry of the six list maps pinned under `pin_dir`, read with handles of this test's
/// own (not a `Shield`, whose load would migrate the pins).
fn raw_entries(pin_dir: &Path) -> BTreeMap<(ListKind, IpNet), EntryStats> {
    let mut out = BTreeMap::new();
    for list in ListKind::ALL {
        for family in Family::ALL {
            let name = list.map_name(family);
            let data = MapData::from_pin(pin_dir.join("maps").join(name))
                .unwrap_or_else(|e| panic!("opening the pinned {name}: {e}"));
            let mut add = |bytes: &[u8], len: u32, stats: EntryStats| {
                let net: IpNet = match bytes.len() {
                    4 => format!(
                        "{}/{len}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap())
                    ),
                    _ => format!(
                        "{}/{len}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())
                    ),
                }
                .parse()
                .unwrap();
                out.insert((list, net), stats);
            };
            match (list.is_trie(), family) {
                (false, Family::V4) => {
                    let m: HashMap<_, [u8; 4], EntryStats> =
                        HashMap::try_from(Map::HashMap(data)).unwrap();
                    for item in m.iter() {
                        let (k, v) = item.unwrap();
                        add(&k, 32, v);
                    }
                }
                (false, Family::V6) => {
                    let m: HashMap<_, [u8; 16], EntryStats> =
                        HashMap::try_from(Map::HashMap(data)).unwrap();
                    for item in m.iter() {
                        let (k, v) = item.unwrap();
                        add(&k, 128, v);
                    }
                }
                (true, Family::V4) => {
                    let m: LpmTrie<_, [u8; 4], EntryStats> =
                        LpmTrie::try_from(Map::LpmTrie(data)).unwrap();
                    for item in m.iter() {
                        let (k, v) = item.unwrap();
                        add(&k.data(), k.prefix_len(), v);
                    }
                }
                (true, Family::V6) => {
                    let m: LpmTrie<_, [u8; 16], EntryStats> =
                        LpmTrie::try_from(Map::LpmTrie(data)).unwrap();
                    for item in m.iter() {
                        let (k, v) = item.unwrap();
                        add(&k.data(), k.prefix_len(), v);
                    }
                }
            }
        }
    }
    out
}

/// The same, through a `Shield` on layout-2 pins (which it adopts as they are).
fn shield_entries(shield: &Shield) -> BTreeMap<(ListKind, IpNet), (u64, u64)> {
    let mut out = BTreeMap::new();
    for e in shield.blocked().unwrap() {
        out.insert(
            (
                ListKind::for_net(groundzero::lists::Side::Block, &e.net),
                e.net,
            ),
            (e.hits, e.last_hit_ns),
        );
    }
    for e in shield.allowed().unwrap() {
        out.insert((ListKind::Allow, e.net), (e.hits, e.last_hit_ns));
    }
    out
}

/// `{entry: [(source, expires)]}` from `/v1/entries`: the TTLs the daemon keeps.
fn holds(d: &harness::ChildDaemon) -> BTreeMap<String, Vec<(String, Option<u64>)>> {
    let reply = d
        .request("GET", "/v1/entries", None)
        .expect("GET /v1/entries")
        .json()
        .unwrap();
    let mut out = BTreeMap::new();
    for e in reply["entries"].as_array().unwrap() {
        let holders = e["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["source"].to_string(), h["expires"].as_u64()))
            .collect();
        out.insert(e["entry"].as_str().unwrap().to_string(), holders);
    }
    out
}

/// `packets` of the interface counter `label` of `/v1/stats`.
fn interface_counter(d: &harness::ChildDaemon, interface: &str, label: &str) -> u64 {
    let stats: Value = d.request("GET", "/v1/stats", None).unwrap().json().unwrap();
    stats["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["interface"] == interface))
        .and_then(|i| i["counters"][label]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {label} counter for {interface} in {stats}"))
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn layout_1_pins_are_migrated_under_a_blocked_flood_without_a_leak() {
    common::require_root();
    let previous = previous_binary();
    let topo = Topology::new("lm");
    let mut work = Workdir::new("layout");
    let dev = topo.node_if.clone();
    let pin = work.pin_dir("a");
    let (state, socket, config) = (
        work.path("state"),
        work.path("api.sock"),
        work.path("gz.toml"),
    );
    std::fs::write(
        &config,
        child::config_text(&[&dev], &pin, &state, &socket, ""),
    )
    .unwrap();

    // 1. The older daemon, its entries, and hits from real traffic.
    let launch = harness::ChildDaemon::command(&previous, &config, &work.path("old.log"))
        .in_netns(topo.node.name());
    let mut old = harness::ChildDaemon::start(&launch, &socket)
        .unwrap_or_else(|e| panic!("the {PREVIOUS} daemon: {e}"));
    let (v4_prefix, v6_prefix) = ("198.18.7.4/30", "2001:2:7::4/126");
    for (path, body) in [
        (
            "/v1/block",
            json!({"entries": [BAD[0]], "ttl": "1h", "reason": "scan"}),
        ),
        ("/v1/block", json!({"entries": [BAD[1]], "ttl": "2h"})),
        ("/v1/block", json!({"entries": [v4_prefix], "ttl": "3h"})),
        ("/v1/block", json!({"entries": [v6_prefix]})),
        ("/v1/allow", json!({"entries": [GOOD[0], GOOD[1]]})),
    ] {
        let r = old.request("POST", path, Some(&body)).expect(path);
        assert_eq!(r.status, 200, "{path} {body}: {}", r.text());
    }
    let rx4 = UdpTally::bind(&topo.node, SocketAddr::new(NODE[0].parse().unwrap(), 9300));
    let rx6 = UdpTally::bind(&topo.node, SocketAddr::new(NODE[1].parse().unwrap(), 9300));
    for (src, rx, n) in [
        (BAD[0], &rx4, 3),
        (BAD[1], &rx6, 4),
        (FLOOD[0], &rx4, 5),
        (FLOOD[1], &rx6, 6),
        (GOOD[0], &rx4, 2),
        (GOOD[1], &rx6, 2),
    ] {
        topo.send(src, rx.addr, n);
    }
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            rx4.from(GOOD[0]) == 2 && rx6.from(GOOD[1]) == 2
        }),
        "the allowed sources' packets did not arrive"
    );
    let holds_before = holds(&old);
    assert_eq!(holds_before.len(), 6, "{holds_before:?}");
    assert_eq!(
        layout::read(&pin).unwrap(),
        Some(1),
        "the older build stamps nothing"
    );
    let prog_old = child::xdp_prog_id(&topo.node, &dev).expect("the older program is attached");
    let dropped_before = interface_counter(&old, &dev, "blocked_cidr");

    // 2. A blocked prefix (v4) and a blocked address (v6) flood from before the old daemon
    // stops until after the new one has migrated and started.
    let flood4 = child::sender(&topo.peer, FLOOD[0]);
    let flood6 = child::sender(&topo.peer, BAD[1]);
    let (stop, progress) = (AtomicBool::new(false), child::Sent::new(0));
    let flooded = |n: u64| {
        let from = progress.load(Ordering::SeqCst);
        assert!(
            wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
                progress.load(Ordering::SeqCst) >= from + n
            }),
            "the flood stalled"
        );
    };
    let (before, prog_new, new) = std::thread::scope(|s| {
        let floods = [(&flood4, rx4.addr), (&flood6, rx6.addr)].map(|(socket, to)| {
            let (stop, progress) = (&stop, &progress);
            s.spawn(move || {
                child::paced_flood(
                    socket,
                    to,
                    10,
                    Duration::from_millis(20),
                    Duration::from_secs(60),
                    stop,
                    progress,
                )
            })
        });
        let _stop = StopOnDrop(&stop);
        flooded(100);

        old.stop_with(Signal::SIGTERM)
            .expect("stopping the older daemon");
        // Read after the stop: the older program still runs in the pinned link, so the
        // flooded entries' hits still climb; the others' stay as they are.
        let before = raw_entries(&pin);
        flooded(100);

        // 3. This build's daemon on the same pins and state.
        let new = ChildDaemon::start(&config, &socket, &work.path("new.log"), Some(&topo.node));
        flooded(100);
        let prog_new = child::xdp_prog_id(&topo.node, &dev);
        stop.store(true, Ordering::SeqCst);
        let sent: u64 = floods.into_iter().map(|f| f.join().unwrap()).sum();
        println!("the blocked sources sent {sent} packets across the upgrade");
        (before, prog_new, new)
    });
    let log = new.log_text();
    assert!(
        log.contains(&format!("migrating them to layout {}", layout::LAYOUT)),
        "the new daemon did not say it migrated:\n{log}"
    );

    // The stamp, the pins, the link.
    assert_eq!(layout::read(&pin).unwrap(), Some(layout::LAYOUT));
    for leftover in ["next", "retired"] {
        assert!(
            !pin.join(leftover).exists(),
            "{leftover}/ left in {}",
            pin.display()
        );
    }
    let prog_new = prog_new.expect("no XDP program on the interface after the upgrade");
    assert_ne!(prog_new, prog_old, "the link still runs the older program");

    // Every entry, with its hits and last hit, in the new maps.
    let kernel = Shield::load(ShieldOptions {
        pin_dir: Some(pin.clone()),
        ..Default::default()
    })
    .expect("opening the migrated pins");
    let after = shield_entries(&kernel);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the entries differ"
    );
    assert_eq!(before.len(), 6, "{before:?}");
    let flooded_entries: [IpNet; 2] = [
        v4_prefix.parse().unwrap(),
        format!("{}/128", BAD[1]).parse().unwrap(),
    ];
    for ((list, net), old_stats) in &before {
        let (hits, last_hit) = after[&(*list, *net)];
        if flooded_entries.contains(net) {
            // The flood went on: the new program counts on top of the copied hits.
            assert!(
                hits > old_stats.hits,
                "{net}: {hits} hits, {} before",
                old_stats.hits
            );
        } else {
            assert_eq!(
                (hits, last_hit),
                (old_stats.hits, old_stats.last_hit_ns),
                "{net}'s hits and last hit were not copied"
            );
            assert!(hits >= 2, "{net}: {hits} hits from the traffic sent");
        }
    }
    // The summaries were counted for the copied lists (else the program would skip them): the
    // prefix ones for the tries, the exact ones (new in layout 4) for the hashes.
    assert!(kernel
        .summary_counts(ListKind::BlockCidr, FLOOD[0].parse().unwrap())
        .iter()
        .all(|&c| c > 0));
    assert!(kernel
        .summary_counts(ListKind::BlockExact, BAD[1].parse().unwrap())
        .iter()
        .all(|&c| c > 0));
    // And the summaries' bits, which the program reads (new in layout 5).
    assert_eq!(
        kernel.summary_bits(ListKind::BlockExact, BAD[1].parse().unwrap()),
        Some(vec![true]),
        "{} is counted but its bit is clear",
        BAD[1]
    );
    assert_eq!(
        kernel.summary_bits(ListKind::BlockCidr, FLOOD[0].parse().unwrap()),
        Some(vec![true]),
        "{}'s prefix is counted but its bit is clear",
        FLOOD[0]
    );
    // And every exact entry has its slot, where the program finds it (new in layout 6).
    for (list, net) in before.keys() {
        if *list == ListKind::BlockExact {
            assert_eq!(
                kernel.exact_slot(net.addr()),
                Some(true),
                "{net} was copied without a slot"
            );
        }
    }
    // The TTLs and reasons the daemon keeps, and the counters, did not go backwards.
    assert_eq!(holds(&new), holds_before);
    assert!(interface_counter(&new, &dev, "blocked_cidr") > dropped_before);
    // (After the entries' hits were read: this adds 5.) Zero packets of the blocked sources reached the receiver, before, during or after.
    topo.send(GOOD[0], rx4.addr, 5);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || rx4
            .from(GOOD[0])
            == 7),
        "the receiver missed the allowed source's packets after the upgrade"
    );
    for (src, rx) in [
        (FLOOD[0], &rx4),
        (BAD[1], &rx6),
        (BAD[0], &rx4),
        (FLOOD[1], &rx6),
    ] {
        assert_eq!(rx.from(src), 0, "packets of the blocked {src} leaked");
    }

    drop(kernel);
    drop(new);
}

#[test]
fn a_newer_layout_is_refused_and_left_alone() {
    common::require_root();
    let topo = Topology::new("ln");
    let mut work = Workdir::new("layout-new");
    let dev = topo.node_if.clone();
    let pin = work.pin_dir("a");
    std::fs::create_dir_all(&pin).unwrap();
    layout::write(&pin, 99).unwrap();
    let (state, socket, config) = (
        work.path("state"),
        work.path("api.sock"),
        work.path("gz.toml"),
    );
    std::fs::write(
        &config,
        child::config_text(&[&dev], &pin, &state, &socket, ""),
    )
    .unwrap();
    let mut d = ChildDaemon::spawn(&config, &socket, &work.path("gz.log"), Some(&topo.node));
    let status = d.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the daemon still runs on a layout-99 pin dir:\n{}",
            d.log_text()
        )
    });
    let log = d.log_text();
    assert!(!status.success(), "exited with {status}:\n{log}");
    for expect in [
        "map layout 99",
        &format!("layout {}", layout::LAYOUT),
        "groundzero cleanup",
    ] {
        assert!(log.contains(expect), "the refusal lacks `{expect}`:\n{log}");
    }
    assert_eq!(
        layout::read(&pin).unwrap(),
        Some(99),
        "the stamp was changed"
    );
    assert!(
        !pin.join("maps").exists(),
        "maps were pinned next to a newer layout"
    );
    assert_eq!(
        child::xdp_prog_id(&topo.node, &dev),
        None,
        "XDP was attached"
    );

    // The library refuses the same way.
    let err = Shield::load(ShieldOptions {
        pin_dir: Some(pin.clone()),
        ..Default::default()
    })
    .expect_err("a Shield adopted a layout-99 pin dir");
    assert!(
        matches!(err, groundzero::Error::NewerLayout { found: 99, .. }),
        "{err}"
    );
}

/// A `Shield` on `pin_dir` (pinning, adopting, migrating as a daemon's load does).
fn pinned_shield(pin_dir: &Path) -> Shield {
    Shield::load(ShieldOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("loading on {}: {e}", pin_dir.display()))
}

fn blocked_nets(shield: &Shield) -> Vec<IpNet> {
    shield
        .blocked()
        .unwrap()
        .into_iter()
        .map(|e| e.net)
        .collect()
}

/// What a crash leaves: `pin` holds an old set (its maps, no stamp: layout 1) and `next/` a
/// complete new set, stamped or not. Built from two real pinned sets with one entry each.
fn crashed_migration(work: &mut Workdir, tag: &str, stamped: bool) -> PathBuf {
    let pin = work.pin_dir(tag);
    let scratch = work.pin_dir(&format!("{tag}-new"));
    for (dir, entry) in [(&pin, "198.18.9.1/32"), (&scratch, "198.18.9.2/32")] {
        let mut shield = pinned_shield(dir);
        shield.block(entry.parse().unwrap()).unwrap();
    }
    std::fs::remove_file(pin.join("layout")).unwrap();
    std::fs::create_dir(pin.join("next")).unwrap();
    std::fs::rename(scratch.join("maps"), pin.join("next/maps")).unwrap();
    if stamped {
        layout::write(&pin.join("next"), layout::LAYOUT).unwrap();
    }
    assert_eq!(layout::read(&pin).unwrap(), Some(1));
    pin
}

#[test]
fn an_interrupted_migration_is_finished_when_its_new_maps_were_complete_else_redone() {
    common::require_root();
    let mut work = Workdir::new("layout-crash");
    let new_entry: IpNet = "198.18.9.2/32".parse().unwrap();
    let old_entry: IpNet = "198.18.9.1/32".parse().unwrap();

    // Stamped next/: the new set was complete (links may already run it): committed as it is.
    let pin = crashed_migration(&mut work, "done", true);
    let shield = pinned_shield(&pin);
    assert_eq!(
        blocked_nets(&shield),
        vec![new_entry],
        "the complete new set was not kept"
    );
    assert_eq!(layout::read(&pin).unwrap(), Some(layout::LAYOUT));
    for leftover in ["next", "retired"] {
        assert!(
            !pin.join(leftover).exists(),
            "{leftover}/ left after recovery"
        );
    }
    drop(shield);

    // Unstamped next/: half built, never in a link: discarded, and the old set migrated again.
    let pin = crashed_migration(&mut work, "half", false);
    let shield = pinned_shield(&pin);
    assert_eq!(
        blocked_nets(&shield),
        vec![old_entry],
        "the old set was not the one migrated"
    );
    assert_eq!(layout::read(&pin).unwrap(), Some(layout::LAYOUT));
    for leftover in ["next", "retired"] {
        assert!(
            !pin.join(leftover).exists(),
            "{leftover}/ left after recovery"
        );
    }
}
