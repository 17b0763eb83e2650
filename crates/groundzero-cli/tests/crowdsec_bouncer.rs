//! groundzero as a CrowdSec bouncer against a real LAPI (Debian's crowdsec 1.4.6, through
//! `groundzero_lab::crowdsec`) and the in-process daemon: decisions land in the kernel maps
//! (read from the pinned maps, not the daemon's records), new ones arrive within a pull
//! interval, deleted ones leave, the guard refuses and counts what it protects, and a LAPI
//! that stops, comes back or revokes the key leaves the set in force and converges again.
//!
//! Needs root (XDP maps) and the unpacked crowdsec of `scripts/setup.sh`.
mod common;

use std::{collections::BTreeSet, path::Path, time::Duration};

use common::{
    daemon::TestDaemon,
    state::{self, Kernel},
    wait_for,
};
use groundzero::IpNet;
use groundzero_lab::crowdsec::{DeleteFilter, Lapi, NewDecision};
use hyper::Method;
use serde_json::Value;

const KEY: &str = "groundzero-bouncer-test-key-0123456789";
/// How soon a change made on the LAPI must be in the maps: a 1 s pull interval, plus the pull
/// itself and cscli's own second or so on a loaded machine.
const ARRIVAL: Duration = Duration::from_secs(5);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn blocked(pin_dir: &Path) -> BTreeSet<IpNet> {
    Kernel::open(pin_dir).blocked()
}

/// Waits (up to `limit`) until the blocklist maps hold all of `present` and none of `absent`.
fn wait_maps(d: &TestDaemon, present: &[&str], absent: &[&str], limit: Duration) {
    let ok = wait_for(limit, Duration::from_millis(100), || {
        let b = blocked(&d.pin_dir);
        present.iter().all(|n| b.contains(&net(n))) && absent.iter().all(|n| !b.contains(&net(n)))
    });
    assert!(
        ok,
        "after {limit:?} the maps hold {:?}; wanted {present:?} and none of {absent:?}\n{}",
        blocked(&d.pin_dir),
        d.ok(Method::GET, "/v1/crowdsec", None)
    );
}

fn status(d: &TestDaemon) -> Value {
    d.ok(Method::GET, "/v1/crowdsec", None)
}

/// The daemon's config: 203.0.113.0/24 protected, pulls every second, `extra` in `[crowdsec]`.
fn config(lapi: &Lapi, key_file: &Path, extra: &str) -> String {
    format!(
        "[guard]\nprotected = [\"203.0.113.0/24\"]\n\
         [crowdsec]\nlapi_url = \"{}\"\napi_key_file = {:?}\npull_interval = \"1s\"\n{extra}\n",
        lapi.url(),
        key_file
    )
}

#[test]
fn decisions_are_enforced_through_the_guard_and_survive_lapi_faults() {
    common::require_root();
    let mut lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_bouncer("gz-node", KEY).unwrap();
    for d in [
        NewDecision::ip("198.19.200.1").reason("crowdsecurity/ssh-bf"),
        // Not normalised by the LAPI: groundzero normalises.
        NewDecision::range("198.51.100.7/24").reason("range-reason"),
        NewDecision::ip("2001:0DB8:0000::0001"),
        // Protected by the guard: refused and counted.
        NewDecision::ip("203.0.113.99"),
        // Wider than /8: refused by the wide-prefix rule.
        NewDecision::range("16.0.0.0/4"),
        // Not a ban.
        NewDecision::ip("198.19.200.2").kind("captcha"),
    ] {
        lapi.add_decision(&d).unwrap();
    }
    let key_file = std::env::temp_dir().join(format!("gz-cs-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // These sets are small: one change is a large share of them.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = TestDaemon::start(&config(
        &lapi,
        &key_file,
        &format!("max_change = 10.0\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ncache_for = \"0s\""),
    ));
    let metrics = || {
        ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };
    let has = |text: &str, line: &str| text.lines().any(|l| l == line);

    // The startup pull lands in the kernel maps.
    wait_maps(
        &d,
        &["198.19.200.1/32", "198.51.100.0/24", "2001:db8::1/128"],
        &["203.0.113.99/32", "16.0.0.0/4", "198.19.200.2/32"],
        Duration::from_secs(10),
    );
    // Source, reason and expiry as the registry records them.
    let view = state::api_view(&d.socket).unwrap();
    let hold = &view[&("block".to_string(), net("198.19.200.1/32"))]["crowdsec:cscli"];
    assert_eq!(hold.reason.as_deref(), Some("crowdsecurity/ssh-bf"));
    let expires = hold.expires.expect("a crowdsec hold expires");
    let in_an_hour = state::now_unix() + 3600;
    assert!(
        expires <= in_an_hour + 1 && expires + 30 >= in_an_hour,
        "1h decision: expires {expires}, now+1h {in_an_hour}"
    );
    let s = status(&d);
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["error"], Value::Null, "{s}");
    assert!(s["pulls"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["entries"]["crowdsec:cscli"]["ip"], 3, "{s}");
    assert_eq!(s["entries"]["crowdsec:cscli"]["range"], 2, "{s}");
    assert_eq!(s["guard_refusals"], 2, "protected and wide: {s}");
    let guard = d.ok(Method::GET, "/v1/guard", None);
    assert_eq!(guard["refusals"]["crowdsec"], 2, "{guard}");
    let text = metrics();
    for line in [
        "groundzero_crowdsec_up 1",
        "groundzero_crowdsec_decisions{source=\"crowdsec:cscli\",scope=\"ip\"} 3",
        "groundzero_crowdsec_decisions{source=\"crowdsec:cscli\",scope=\"range\"} 2",
        "groundzero_crowdsec_pull_errors_total 0",
        "groundzero_crowdsec_pull_interval_seconds 1.0",
        "groundzero_guard_refusals_total{source=\"crowdsec\"} 2",
    ] {
        assert!(has(&text, line), "no `{line}` in\n{text}");
    }

    // A new decision arrives within a pull interval (plus the time cscli takes).
    lapi.add_decision(&NewDecision::ip("198.19.200.3")).unwrap();
    wait_maps(&d, &["198.19.200.3/32"], &[], ARRIVAL);
    // A deleted one leaves.
    assert_eq!(
        lapi.delete_decisions(&DeleteFilter::Ip("198.19.200.1".into()))
            .unwrap(),
        1
    );
    wait_maps(&d, &[], &["198.19.200.1/32"], ARRIVAL);
    // A guard refusal in a delta is counted too.
    lapi.add_decision(&NewDecision::ip("203.0.113.100"))
        .unwrap();
    assert!(wait_for(ARRIVAL, Duration::from_millis(100), || status(&d)
        ["guard_refusals"]
        == 3));

    // LAPI stopped: the set stays, the error is visible.
    let before = blocked(&d.pin_dir);
    lapi.stop();
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            status(&d)["consecutive_errors"].as_u64().unwrap_or(0) >= 1
        }),
        "{}",
        status(&d)
    );
    let s = status(&d);
    assert!(
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("/v1/decisions/stream")),
        "{s}"
    );
    assert_eq!(
        blocked(&d.pin_dir),
        before,
        "a failed pull changed the maps"
    );
    let text = metrics();
    assert!(has(&text, "groundzero_crowdsec_up 0"), "{text}");
    assert!(
        !has(&text, "groundzero_crowdsec_pull_errors_total 0"),
        "{text}"
    );

    // LAPI back, with changes made meanwhile: the set converges (startup pull).
    lapi.restart().unwrap();
    lapi.add_decision(&NewDecision::ip("198.19.200.4")).unwrap();
    lapi.delete_decisions(&DeleteFilter::Range("198.51.100.7/24".into()))
        .unwrap();
    wait_maps(
        &d,
        &["198.19.200.3/32", "198.19.200.4/32", "2001:db8::1/128"],
        &["198.51.100.0/24", "198.19.200.1/32"],
        Duration::from_secs(30),
    );
    assert!(wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || status(&d)["error"].is_null()
    ));

    // Key revoked: 403 is visible, the set stays.
    let before = blocked(&d.pin_dir);
    lapi.delete_bouncer("gz-node").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            status(&d)["error"]
                .as_str()
                .is_some_and(|e| e.contains("403"))
        }),
        "{}",
        status(&d)
    );
    assert_eq!(blocked(&d.pin_dir), before);
    let _ = std::fs::remove_file(&key_file);
}

#[test]
fn a_restarted_daemon_keeps_enforcing_and_converges() {
    common::require_root();
    let lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_bouncer("gz-restart", KEY).unwrap();
    lapi.add_decision(&NewDecision::ip("198.19.200.21"))
        .unwrap();
    lapi.add_decision(&NewDecision::ip("198.19.200.22"))
        .unwrap();
    let key_file = std::env::temp_dir().join(format!("gz-cs-key2-{}", std::process::id()));
    std::fs::write(&key_file, KEY).unwrap();
    let d = TestDaemon::start(&config(&lapi, &key_file, ""));
    wait_maps(
        &d,
        &["198.19.200.21/32", "198.19.200.22/32"],
        &[],
        Duration::from_secs(10),
    );
    let (dir, pin_dir) = d.stop();
    // Filtering goes on while the daemon is down (pinned maps).
    let down = blocked(&pin_dir);
    assert!(down.contains(&net("198.19.200.21/32")) && down.contains(&net("198.19.200.22/32")));
    lapi.delete_decisions(&DeleteFilter::Ip("198.19.200.22".into()))
        .unwrap();
    lapi.add_decision(&NewDecision::ip("198.19.200.23"))
        .unwrap();
    // Default max_change (0.5): one added and one removed of 2 is 100%: the startup pull is
    // refused, the set in force stays, and the refusal is visible.
    let d = TestDaemon::start_with(dir, pin_dir, &config(&lapi, &key_file, ""));
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            status(&d)["error"]
                .as_str()
                .is_some_and(|e| e.contains("startup pull refused"))
        }),
        "{}",
        status(&d)
    );
    assert!(status(&d)["refused"].as_u64().unwrap() >= 1);
    let kept = blocked(&d.pin_dir);
    assert!(kept.contains(&net("198.19.200.21/32")) && kept.contains(&net("198.19.200.22/32")));
    assert!(!kept.contains(&net("198.19.200.23/32")));

    // With a max_change that allows it: no gap (the journal restores 198.19.200.21 at once), and
    // the startup pull converges.
    let (dir, pin_dir) = d.stop();
    let d = TestDaemon::start_with(dir, pin_dir, &config(&lapi, &key_file, "max_change = 1.0"));
    assert!(blocked(&d.pin_dir).contains(&net("198.19.200.21/32")));
    wait_maps(
        &d,
        &["198.19.200.21/32", "198.19.200.23/32"],
        &["198.19.200.22/32"],
        Duration::from_secs(10),
    );
    // One hold per entry and source: nothing duplicated by the second startup pull.
    let view = state::api_view(&d.socket).unwrap();
    let holds = &view[&("block".to_string(), net("198.19.200.21/32"))];
    assert_eq!(holds.keys().collect::<Vec<_>>(), ["crowdsec:cscli"]);
    let _ = std::fs::remove_file(&key_file);
}

/// What the fake LAPI answers.
#[derive(Clone)]
enum Answer {
    Json(String),
    Garbage,
    Truncated(String),
    Status(u16),
    Slow(Duration),
}

/// A tiny HTTP server standing in for a LAPI that misbehaves: answers each request with the
/// current [`Answer`] and records each request's head.
struct FakeLapi {
    addr: std::net::SocketAddr,
    answer: std::sync::Arc<std::sync::Mutex<Answer>>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeLapi {
    fn start(first: Answer) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = std::sync::Arc::new(std::sync::Mutex::new(first));
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, h) = (answer.clone(), heads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                h.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let answer = a.lock().unwrap().clone();
                let reply = |status: u16, body: &str| {
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let text = match answer {
                    Answer::Json(body) => reply(200, &body),
                    Answer::Garbage => reply(200, "<html>502 Bad Gateway</html>"),
                    Answer::Truncated(body) => {
                        // Announces the whole body, sends half, closes.
                        let full = reply(200, &body);
                        full[..full.len() - body.len() / 2].to_string()
                    }
                    Answer::Status(code) => reply(code, "{\"message\":\"nope\"}"),
                    Answer::Slow(wait) => {
                        std::thread::sleep(wait);
                        reply(200, "{\"new\":null,\"deleted\":null}")
                    }
                };
                let _ = stream.write_all(text.as_bytes());
            }
        });
        FakeLapi {
            addr,
            answer,
            heads,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

fn stream_of(decisions: &[(u64, &str)]) -> String {
    let new: Vec<Value> = decisions
        .iter()
        .map(|(id, ip)| {
            serde_json::json!({"duration": "59m59.5s", "id": id, "origin": "crowdsec",
                "scenario": "crowdsecurity/http-probing", "scope": "Ip", "type": "ban", "value": ip})
        })
        .collect();
    serde_json::json!({"deleted": null, "new": new}).to_string()
}

#[test]
fn garbage_truncated_failing_and_slow_answers_keep_the_set() {
    common::require_root();
    let fake = FakeLapi::start(Answer::Json(stream_of(&[
        (1, "198.19.200.31"),
        (2, "198.19.200.32"),
    ])));
    let key_file = std::env::temp_dir().join(format!("gz-cs-key3-{}", std::process::id()));
    std::fs::write(&key_file, KEY).unwrap();
    let d = TestDaemon::start(&format!(
        "[crowdsec]\nlapi_url = \"http://{}\"\napi_key_file = {:?}\npull_interval = \"1s\"\n\
         timeout = \"2s\"\nmax_change = 10.0\n",
        fake.addr, key_file
    ));
    wait_maps(
        &d,
        &["198.19.200.31/32", "198.19.200.32/32"],
        &[],
        Duration::from_secs(10),
    );
    {
        let heads = fake.heads.lock().unwrap();
        let first = heads[0].to_ascii_lowercase();
        assert!(
            first.starts_with("get /v1/decisions/stream?startup=true "),
            "{first}"
        );
        assert!(first.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase())));
        assert!(
            first.contains("user-agent: crowdsec-groundzero-bouncer/"),
            "{first}"
        );
        assert!(
            heads[1..]
                .iter()
                .all(|h| h.starts_with("GET /v1/decisions/stream ")),
            "deltas after the startup pull: {heads:?}"
        );
    }
    let kept = blocked(&d.pin_dir);
    for (answer, expect) in [
        (Answer::Garbage, "not valid JSON"),
        (
            Answer::Truncated(stream_of(&[(3, "198.19.200.33")])),
            "/v1/decisions/stream",
        ),
        (Answer::Status(500), "HTTP 500"),
        (Answer::Status(403), "refused the bouncer key"),
        (Answer::Slow(Duration::from_secs(4)), "/v1/decisions/stream"),
    ] {
        fake.set(answer);
        let errors = status(&d)["pull_errors"].as_u64().unwrap();
        assert!(
            wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
                let s = status(&d);
                s["pull_errors"].as_u64().unwrap() > errors
                    && s["error"].as_str().is_some_and(|e| e.contains(expect))
            }),
            "expected an error with {expect:?}: {}",
            status(&d)
        );
        assert_eq!(blocked(&d.pin_dir), kept, "a bad answer changed the maps");
    }
    // Good again: a startup pull converges to the new set.
    let before = fake.requests();
    fake.set(Answer::Json(stream_of(&[
        (2, "198.19.200.32"),
        (4, "198.19.200.34"),
    ])));
    wait_maps(
        &d,
        &["198.19.200.32/32", "198.19.200.34/32"],
        &["198.19.200.31/32", "198.19.200.33/32"],
        Duration::from_secs(70),
    );
    let heads = fake.heads.lock().unwrap();
    assert!(
        heads[before..]
            .iter()
            .any(|h| h.starts_with("GET /v1/decisions/stream?startup=true ")),
        "after failures the next pull is a startup pull: {heads:?}"
    );
    drop(heads);
    assert!(status(&d)["error"].is_null());
    let _ = std::fs::remove_file(&key_file);
}

/// `n` distinct addresses of 100.64.0.0/10 from `first` on.
fn cgnat(first: u32, n: u32) -> Vec<NewDecision> {
    (first..first + n)
        .map(|i| {
            let a = 0x6440_0000u32 + i;
            NewDecision::ip(std::net::Ipv4Addr::from(a).to_string()).reason("scale")
        })
        .collect()
}

fn blocked_in_cgnat(pin_dir: &Path) -> usize {
    let cgnat = net("100.64.0.0/10");
    blocked(pin_dir)
        .iter()
        .filter(|n| cgnat.contains(*n))
        .count()
}

#[test]
fn a_startup_pull_of_100k_decisions_then_a_10k_delta() {
    common::require_root();
    let lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_bouncer("gz-scale", KEY).unwrap();
    lapi.import_decisions(&cgnat(0, 100_000)).unwrap();
    let key_file = std::env::temp_dir().join(format!("gz-cs-key4-{}", std::process::id()));
    std::fs::write(&key_file, KEY).unwrap();
    // A LAPI can leave decisions created during a pull out of every delta (seen here: 50 of a
    // 10,000 import): the resync pulls the whole set again.
    let d = TestDaemon::start(&config(&lapi, &key_file, "resync_interval = \"20s\""));
    let decisions = |d: &TestDaemon| status(d)["decisions"].as_u64().unwrap_or(0);
    assert!(
        wait_for(Duration::from_secs(120), Duration::from_millis(200), || {
            decisions(&d) == 100_000
        }),
        "{}",
        status(&d)
    );
    assert_eq!(blocked_in_cgnat(&d.pin_dir), 100_000, "in the kernel maps");
    let s = status(&d);
    eprintln!(
        "startup pull of 100,000: fetched in {}s, applied in {}s",
        s["startup_fetch_seconds"], s["startup_apply_seconds"]
    );

    lapi.import_decisions(&cgnat(100_000, 10_000)).unwrap();
    assert!(
        wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
            decisions(&d) == 110_000
        }),
        "{}",
        status(&d)
    );
    assert_eq!(blocked_in_cgnat(&d.pin_dir), 110_000, "in the kernel maps");
    let s = status(&d);
    eprintln!(
        "delta of 10,000 (or less: a resync may take some): fetched in {}s, applied in {}s; \
         last startup pull (a resync of up to 110,000): fetched in {}s, applied in {}s",
        s["delta_fetch_seconds"],
        s["delta_apply_seconds"],
        s["startup_fetch_seconds"],
        s["startup_apply_seconds"]
    );

    // A resync of an unchanged set writes nothing (110,000 journal records otherwise).
    let state_dir = d.dir.join("state");
    let journal = state::journal_bytes(&state_dir);
    let synced = status(&d)["last_startup_pull"].as_u64().unwrap();
    assert!(
        wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
            status(&d)["last_startup_pull"].as_u64().unwrap() > synced
        }),
        "no resync: {}",
        status(&d)
    );
    assert_eq!(decisions(&d), 110_000);
    assert!(
        state::journal_bytes(&state_dir) <= journal + 4096,
        "a resync of an unchanged set wrote {} bytes",
        state::journal_bytes(&state_dir) - journal
    );
    let _ = std::fs::remove_file(&key_file);
}
