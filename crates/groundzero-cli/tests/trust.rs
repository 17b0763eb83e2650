//! The trust fixes, checked where they matter: in the kernel maps the XDP program reads and on
//! the wire, not only in the API's answers. A feed typo never blocks the Internet, a feed that
//! changes too much or covers a protected prefix keeps its old set, the lockout guard judges
//! every way a block can come in, mass expiry does not stall the API, a journal bigger than the
//! maps does not stop the daemon, and auto-bans go through the guard and ban the bucket's prefix.
mod common;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{
    daemon::TestDaemon,
    state::{self, Kernel},
    topology::{Topology, NODE, NODE_MAC, PEER_MAC},
};
use groundzero::{parse_entry, IpNet};
use groundzero_lab::{
    craft::{self, L4},
    raw::{parse_mac, set_macs, RawSender},
};
use hyper::Method;
use serde_json::{json, Value};

/// One test at a time: the latency test must not measure the other tests' daemons, and the
/// machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// An entry as the kernel keys and the API show it (`198.51.100.1` -> `198.51.100.1/32`).
fn net(s: &str) -> String {
    parse_entry(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .to_string()
}

fn nets<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    items.into_iter().map(|s| net(s.as_ref())).collect()
}

/// The blocklist as the kernel maps hold it.
fn kernel_blocks(d: &TestDaemon) -> BTreeSet<String> {
    Kernel::open(&d.pin_dir)
        .keys()
        .into_iter()
        .filter(|(list, _)| list == "block")
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Files for feeds, made before the daemon that reads them, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gz-trust-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn feed_toml(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "[[feed]]\nname = \"{name}\"\nurl = {:?}\nrefresh = \"1h\"\n{extra}\n",
        path
    )
}

fn feed_status(d: &TestDaemon, name: &str) -> Option<Value> {
    let v = d.ok(Method::GET, "/v1/feeds", None);
    v["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
}

/// Waits for the refresh every feed does when the daemon starts, so that no later step races it.
fn wait_first_refreshes(d: &TestDaemon, names: &[&str]) {
    let done = common::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        names
            .iter()
            .all(|n| feed_status(d, n).is_some_and(|s| s["last_attempt"].as_u64().is_some()))
    });
    assert!(done, "the first refreshes of {names:?} did not happen");
}

fn refresh(d: &TestDaemon, name: &str) -> Value {
    let v = d.ok(Method::POST, &format!("/v1/feeds/{name}/refresh"), None);
    assert_eq!(v["feed"]["name"], name, "{v}");
    v["feed"].clone()
}

fn addresses(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn a_feed_typo_never_blocks_the_internet() {
    let _serial = serial();
    let scratch = Scratch::new("typo");
    let typo = scratch.write("typo.txt", &["198.51.100.7/0".to_string()]);
    let good = addresses("198.51.100.", 1..5);
    let guarded = scratch.write("guarded.txt", &good);
    let d = TestDaemon::start(&format!(
        "[guard]\nprotected = [\"198.18.77.0/24\"]\n{}{}",
        feed_toml("typo", &typo, ""),
        feed_toml("guarded", &guarded, "")
    ));
    wait_first_refreshes(&d, &["typo", "guarded"]);

    // The typo: an error naming the feed and the line, nothing applied.
    let status = refresh(&d, "typo");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("feed typo:1:") && error.contains("198.51.100.7/0"),
        "{status}"
    );
    assert_eq!(status["entries"], 0, "{status}");
    assert!(status["last_success"].is_null(), "{status}");
    let listed = feed_status(&d, "typo").unwrap();
    assert_eq!(listed["error"], status["error"], "{listed}");
    assert_eq!(kernel_blocks(&d), nets(&good), "only the good feed's set");
    for address in ["198.18.77.9", "192.0.2.1", "8.8.8.8"] {
        let why = d.ok(Method::GET, &format!("/v1/why/{address}"), None);
        assert_eq!(why["verdict"], "pass", "{why}");
        assert_eq!(why["reason"], "no_match", "{why}");
    }

    // A feed whose set covers a protected prefix: refused as a whole, old set in force.
    let mut bad = good.clone();
    bad.push("198.18.0.0/16".into());
    scratch.write("guarded.txt", &bad);
    let status = refresh(&d, "guarded");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("198.18.77.0/24") && error.contains("198.18.0.0/16"),
        "the refusal names the protected prefix: {status}"
    );
    assert_eq!(status["refused"], 1, "{status}");
    assert_eq!(status["entries"], good.len(), "{status}");
    assert_eq!(
        kernel_blocks(&d),
        nets(&good),
        "the previous set stays in the kernel, the wide one never gets there"
    );
    let why = d.ok(Method::GET, "/v1/why/198.18.77.9", None);
    assert_eq!(why["verdict"], "pass", "{why}");
}

#[test]
fn a_feed_refresh_that_changes_too_much_is_refused() {
    let _serial = serial();
    let scratch = Scratch::new("change");
    let strict_first = addresses("198.51.100.", 1..11);
    let strict_second = addresses("198.51.100.", 11..21);
    let loose_first = addresses("203.0.113.", 1..11);
    let loose_second = addresses("203.0.113.", 11..21);
    let strict = scratch.write("strict.txt", &strict_first);
    let loose = scratch.write("loose.txt", &loose_first);
    let wide = scratch.write("wide.txt", &["10.0.0.0/7".to_string()]);
    // This host's resolver (10.255.255.53 here) lies in 10.0.0.0/7: with management protection
    // the wide feed would be refused for that even with allow_wide. Off, so that only the
    // width decides.
    let config = |wide_extra: &str| {
        format!(
            "[guard]\nprotect_management = false\n{}{}{}",
            feed_toml("strict", &strict, ""),
            feed_toml("loose", &loose, "max_change = 2.0"),
            feed_toml("wide", &wide, wide_extra)
        )
    };
    let d = TestDaemon::start(&config(""));
    wait_first_refreshes(&d, &["strict", "loose", "wide"]);
    assert_eq!(
        kernel_blocks(&d),
        nets(strict_first.iter().chain(&loose_first)),
        "first loads are not change-limited; the wide feed is not applied"
    );
    let wide_status = feed_status(&d, "wide").unwrap();
    assert!(
        wide_status["error"]
            .as_str()
            .is_some_and(|e| e.contains("10.0.0.0/7") && e.contains("wider than /8")),
        "{wide_status}"
    );
    assert_eq!(wide_status["refused"], 1, "{wide_status}");

    // Ten entries replaced by ten others: 200% > 50%.
    scratch.write("strict.txt", &strict_second);
    let status = refresh(&d, "strict");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("add 10 and remove 10 of 10") && error.contains("max_change 50%"),
        "{status}"
    );
    assert_eq!(status["refused"], 1, "{status}");
    // The same change with max_change = 2.0 applies.
    scratch.write("loose.txt", &loose_second);
    let status = refresh(&d, "loose");
    assert!(status["error"].is_null(), "{status}");
    assert_eq!(status["entries"], 10, "{status}");
    assert_eq!(
        kernel_blocks(&d),
        nets(strict_first.iter().chain(&loose_second)),
        "strict keeps its first set, loose has its second"
    );

    // The same daemon restarted with allow_wide on the wide feed: applied.
    let (dir, pin_dir) = d.stop();
    let d = TestDaemon::start_with(dir, pin_dir, &config("allow_wide = true"));
    wait_first_refreshes(&d, &["wide"]);
    let status = refresh(&d, "wide");
    assert!(status["error"].is_null(), "{status}");
    let kernel = kernel_blocks(&d);
    assert!(kernel.contains("10.0.0.0/7"), "{kernel:?}");
    assert_eq!(
        kernel,
        nets(
            strict_first
                .iter()
                .chain(&loose_second)
                .chain(&["10.0.0.0/7".to_string()])
        ),
    );
    let why = d.ok(Method::GET, "/v1/why/11.1.2.3", None);
    assert_eq!(why["verdict"], "drop", "{why}");
    assert_eq!(why["matched"]["entry"], "10.0.0.0/7", "{why}");
}

#[test]
fn the_guard_judges_every_block_path() {
    let _serial = serial();
    let scratch = Scratch::new("paths");
    let feed = scratch.write(
        "g.txt",
        &["198.51.100.70".to_string(), "198.18.77.0/25".to_string()],
    );
    let d = TestDaemon::start(&format!(
        "[guard]\nprotected = [\"198.18.77.0/24\"]\n{}",
        feed_toml("g", &feed, "")
    ));
    wait_first_refreshes(&d, &["g"]);
    d.ok(
        Method::POST,
        "/v1/allow",
        Some(json!({"entries": ["198.18.78.5"]})),
    );

    // The API, per entry: the protected and the allowlisted are refused, the other added.
    let r = d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.77.9", "198.18.78.0/24", "198.51.100.50"]})),
    );
    assert_eq!(
        (&r["added"], &r["applied"], &r["refused"]),
        (&json!(1), &json!(1), &json!(2)),
        "{r}"
    );
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "refused", "{r}");
    assert!(
        results[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("198.18.77.0/24")),
        "{r}"
    );
    assert_eq!(results[1]["status"], "refused", "{r}");
    assert!(
        results[1]["why"]
            .as_str()
            .is_some_and(|w| w.contains("allowlist")),
        "{r}"
    );
    assert_eq!(results[2]["status"], "added", "{r}");

    // All or nothing: nothing.
    let r = state::request(
        &d.socket,
        "POST",
        "/v1/block",
        Some(&json!({"entries": ["198.18.77.10", "198.51.100.51"], "all_or_nothing": true})),
    )
    .expect("an answer");
    assert_eq!(r.status, 409, "{}", r.text());
    // Everything refused: 409 with the per-entry body and an error.
    let r = state::request(
        &d.socket,
        "POST",
        "/v1/block",
        Some(&json!({"entries": ["198.18.77.11"]})),
    )
    .expect("an answer");
    assert_eq!(r.status, 409, "{}", r.text());
    let body = r.json().expect("JSON");
    assert_eq!(body["refused"], 1, "{body}");
    assert_eq!(body["results"][0]["status"], "refused", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("force")),
        "{body}"
    );

    // An import: 409, nothing of it applied.
    let r = state::request(
        &d.socket,
        "POST",
        "/v1/import",
        Some(&json!({"name": "imp", "text": "198.51.100.60\n198.18.77.12\n"})),
    )
    .expect("an answer");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("198.18.77.0/24"), "{}", r.text());

    // The feed: refused at its first load.
    let status = refresh(&d, "g");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("198.18.77.0/24")),
        "{status}"
    );
    assert!(status["refused"].as_u64().unwrap_or(0) >= 1, "{status}");

    assert_eq!(
        kernel_blocks(&d),
        nets(["198.51.100.50"]),
        "only the one entry the guard accepted reaches the kernel"
    );

    // force on the API does reach it.
    let r = d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.77.9"], "force": true})),
    );
    assert_eq!(r["added"], 1, "{r}");
    assert_eq!(
        kernel_blocks(&d),
        nets(["198.51.100.50", "198.18.77.9"]),
        "force overrides the guard"
    );
    let why = d.ok(Method::GET, "/v1/why/198.18.77.9", None);
    assert_eq!(why["verdict"], "drop", "{why}");
}

/// Sends UDP frames built by `frame(k)` out of the peer's end of the veth (so the XDP program
/// on the node's end sees them), at most `max` of them, for at most `limit`, paced to `pps`.
/// Returns how many were sent.
fn flood(
    topo: &Topology,
    max: u64,
    limit: Duration,
    pps: u64,
    mut frame: impl FnMut(u64) -> Vec<u8> + Send,
) -> u64 {
    let peer_if = topo.node_if.replacen("gzj-n", "gzj-p", 1);
    let (node_mac, peer_mac) = (parse_mac(NODE_MAC).unwrap(), parse_mac(PEER_MAC).unwrap());
    topo.peer.run(move || {
        let sender = RawSender::open(&peer_if).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        while sent < max && started.elapsed() < limit {
            // Pacing: never ahead of `pps`.
            let due = Duration::from_secs_f64(sent as f64 / pps as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            let mut f = frame(sent);
            set_macs(&mut f, node_mac, peer_mac);
            // A full socket buffer drops a frame: a flood may lose some.
            if sender.send(&f).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

fn udp(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    craft::ip_packet(
        src,
        dst,
        L4::Udp {
            src_port: 40000,
            dst_port: 9,
        },
        b"flood",
    )
}

/// The number of entries a source holds, from `/v1/stats`.
fn stats_entries(stats: &Value, source: &str) -> u64 {
    stats["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["source"] == source)
                .filter_map(|e| e["entries"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn the_api_answers_within_100ms_while_50k_entries_expire_and_a_flood_runs() {
    let _serial = serial();
    const N: u32 = 50_000;
    let topo = Topology::new("tr4");
    let d = TestDaemon::start_in(
        &topo.node,
        &format!(
            "interfaces = [\"{}\"]\n[capacity]\nexact = 65536\n\
             [ratelimit]\nrate = 1000\nburst = 2000\nban_ttl = \"1m\"\n",
            topo.node_if
        ),
    );
    // 198.19.0.0 .. 198.19.195.79, one request (about 800 kB, under api.max_body_bytes' 64 MiB).
    let entries: Vec<String> = (0..N)
        .map(|i| format!("198.19.{}.{}", i / 256, i % 256))
        .collect();
    let started = Instant::now();
    let r = d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": entries, "ttl": "3s", "reason": "mass expiry"})),
    );
    let block_took = started.elapsed();
    assert_eq!(r["added"], N, "{}", r["added"]);

    let node_v4: IpAddr = NODE[0].parse().unwrap();
    let (latencies, counts) = std::thread::scope(|s| {
        // A random-source flood from 198.18.0.0/15, bounded: 150,000 frames or 4 s.
        let flood = s.spawn(|| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7257);
            flood(&topo, 150_000, Duration::from_secs(4), 40_000, move |_| {
                let low: u32 = rng.gen::<u32>() & 0x1_ffff;
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) | low);
                udp(src.into(), node_v4)
            })
        });
        let mut latencies = Vec::new();
        let mut counts = Vec::new();
        let polling = Instant::now();
        // Until the entries are gone and at least 5 s have passed, bounded at 15 s.
        loop {
            let asked = Instant::now();
            let stats = d.ok(Method::GET, "/v1/stats", None);
            let took = asked.elapsed();
            latencies.push(took);
            let left = stats_entries(&stats, "api");
            if took >= Duration::from_millis(100) {
                // Where the slow answers fall (entries left before and after) tells what held
                // the lock.
                eprintln!(
                    "slow poll at {:?}: {took:?}, entries {} -> {left}",
                    asked - polling,
                    counts.last().copied().unwrap_or(N as u64)
                );
            }
            counts.push(left);
            let elapsed = polling.elapsed();
            if (left == 0 && elapsed > Duration::from_secs(5)) || elapsed > Duration::from_secs(15)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20).saturating_sub(asked.elapsed()));
        }
        let sent = flood.join().unwrap();
        eprintln!("flood: {sent} frames");
        assert!(sent > 10_000, "the flood did not run: {sent} frames");
        (latencies, counts)
    });

    let mut sorted = latencies.clone();
    sorted.sort();
    let max = *sorted.last().unwrap();
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    let p50 = sorted[sorted.len() / 2];
    let slow = latencies
        .iter()
        .filter(|l| **l >= Duration::from_millis(100))
        .count();
    eprintln!(
        "block of {N} took {block_took:?}; {} polls of /v1/stats: p50 {p50:?}, p99 {p99:?}, \
         max {max:?}, {slow} at or over 100 ms; entries left at the first poll {}",
        latencies.len(),
        counts[0]
    );
    // The expiry must have happened while we were asking, or the bound says nothing.
    assert!(
        counts[0] > 0,
        "the entries expired before the first poll (the block took {block_took:?})"
    );
    assert_eq!(
        *counts.last().unwrap(),
        0,
        "the entries did not expire within 15 s"
    );
    let left: Vec<String> = kernel_blocks(&d)
        .into_iter()
        .filter(|n| n.starts_with("198.19."))
        .collect();
    assert!(
        left.is_empty(),
        "{} of the expired entries are still in the kernel, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    assert!(
        max < Duration::from_millis(100),
        "/v1/stats answered in up to {max:?} (p99 {p99:?}, {slow} of {} at or over 100 ms) \
         while {N} entries expired under a flood",
        latencies.len()
    );
}

#[test]
fn a_journal_bigger_than_the_maps_does_not_stop_the_daemon() {
    let _serial = serial();
    let all: Vec<String> = addresses("198.18.90.", 0..64);
    let d = TestDaemon::start("[capacity]\nexact = 64\n");
    let r = d.ok(Method::POST, "/v1/block", Some(json!({"entries": all})));
    assert_eq!(r["added"], 64, "{r}");
    assert_eq!(kernel_blocks(&d), nets(&all));
    let (dir, pin_dir) = d.stop();
    // A reboot: bpffs starts empty, so the maps are made anew at the configured (smaller)
    // size. With the pins kept the daemon would reuse the 64-slot maps.
    groundzero::pins::remove_all(&pin_dir).unwrap();

    let d = TestDaemon::start_with(dir, pin_dir, "[capacity]\nexact = 16\n");
    let kernel = kernel_blocks(&d);
    assert_eq!(kernel.len(), 16, "{kernel:?}");
    let state_dir = d.dir.join("state");
    let unfit_files: Vec<PathBuf> = std::fs::read_dir(&state_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("unfit-") && n.ends_with(".txt"))
        })
        .collect();
    assert_eq!(unfit_files.len(), 1, "{unfit_files:?}");
    let text = std::fs::read_to_string(&unfit_files[0]).unwrap();
    let unfit: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (side, entry) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            assert_eq!(side, "Block", "{l:?}");
            net(entry)
        })
        .collect();
    assert_eq!(unfit.len(), 48, "{text}");
    assert!(unfit.is_disjoint(&kernel), "{text}\n{kernel:?}");
    let union: BTreeSet<String> = unfit.union(&kernel).cloned().collect();
    assert_eq!(union, nets(&all), "kernel and unfit file together: all 64");

    let api: BTreeSet<String> = state::api_view(&d.socket)
        .unwrap()
        .keys()
        .map(|(_, n)| n.to_string())
        .collect();
    assert_eq!(api, kernel, "the API lists exactly what the kernel holds");
    // The journal was rewritten to what is in force: the unfit file is the only record of the
    // other 48 (a later start with larger maps does not bring them back by itself).
    let journal: BTreeSet<String> = state::journal_view(&state_dir)
        .unwrap()
        .keys()
        .map(|(_, n)| n.to_string())
        .collect();
    assert_eq!(journal, kernel, "the journal records what the kernel holds");
}

#[test]
fn auto_bans_pass_the_guard_and_ban_the_prefix() {
    let _serial = serial();
    let topo = Topology::new("tr6");
    let protected = "198.18.66.5";
    let d = TestDaemon::start_in(
        &topo.node,
        &format!(
            "interfaces = [\"{}\"]\n[guard]\nprotected = [\"{protected}/32\"]\n\
             [ratelimit]\nrate = 50\nburst = 50\nban_ttl = \"2m\"\n",
            topo.node_if
        ),
    );
    let (node_v4, node_v6): (IpAddr, IpAddr) = (NODE[0].parse().unwrap(), NODE[1].parse().unwrap());
    // A protected v4 source, an unprotected v4 one (the control), and two addresses of one /64.
    let sources: [IpAddr; 4] = [
        protected.parse().unwrap(),
        "198.18.67.9".parse().unwrap(),
        "2001:2:66::a".parse().unwrap(),
        "2001:2:66::b".parse().unwrap(),
    ];
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .map(|s| udp(*s, if s.is_ipv4() { node_v4 } else { node_v6 }))
        .collect();
    let covers_protected = |kernel: &BTreeSet<String>| {
        let p: IpNet = net(protected).parse().unwrap();
        kernel
            .iter()
            .filter_map(|n| n.parse::<IpNet>().ok())
            .find(|n| n.contains(&p))
    };
    // 200 pps per source, 4 x the rate, for 2 s.
    let sent = flood(&topo, 1_600, Duration::from_secs(3), 800, |k| {
        frames[(k % 4) as usize].clone()
    });
    assert!(sent >= 1_200, "{sent}");
    let wanted = nets(["198.18.67.9", "2001:2:66::/64"]);
    let mut kernel = BTreeSet::new();
    let banned = common::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        kernel = kernel_blocks(&d);
        assert_eq!(
            covers_protected(&kernel),
            None,
            "the protected source is in the kernel blocklist"
        );
        wanted.is_subset(&kernel)
    });
    assert!(banned, "not banned in 10 s: kernel holds {kernel:?}");
    // The /64, not its addresses one by one; and nothing else.
    assert_eq!(kernel, wanted, "{kernel:?}");
    let entries = d.ok(Method::GET, "/v1/entries?source=auto-ban", None);
    let listed: BTreeSet<String> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, wanted, "{entries}");
    let why = d.ok(Method::GET, "/v1/why/2001:2:66::ffff", None);
    assert_eq!(why["verdict"], "drop", "another address of the /64: {why}");
    assert_eq!(why["matched"]["entry"], "2001:2:66::/64", "{why}");

    // The protected source goes on flooding: still never banned.
    flood(&topo, 400, Duration::from_secs(1), 400, |_| {
        frames[0].clone()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let kernel = kernel_blocks(&d);
    assert_eq!(covers_protected(&kernel), None, "{kernel:?}");
    let why = d.ok(Method::GET, &format!("/v1/why/{protected}"), None);
    assert_eq!(why["verdict"], "pass", "{why}");
}
