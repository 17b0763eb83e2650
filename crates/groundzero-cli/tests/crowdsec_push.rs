//! groundzero as a CrowdSec watcher (`[crowdsec.push]`) against a real LAPI (Debian's crowdsec
//! 1.4.6, through `groundzero_lab::crowdsec`): bans an application makes on node A reach the
//! LAPI as decisions of scope `Ip`/`Range` with a positive duration, and a second daemon (node
//! B, its own pins, state and bouncer key, pull only) enforces them in its kernel maps; a rate
//! limit's auto-ban of a flooding source in a test namespace is pushed too. What came from
//! CrowdSec is never pushed back; a LAPI outage never blocks a ban and pushes resume after it;
//! a wrong password is visible and counted; SIGHUP changes `[crowdsec]` without detaching XDP.
//!
//! Needs root (XDP maps) and the unpacked crowdsec of `scripts/setup.sh`.
mod common;

use std::{collections::BTreeSet, path::Path, path::PathBuf, time::Duration};

use common::{daemon::TestDaemon, state::Kernel, wait_for};
use groundzero::IpNet;
use groundzero_lab::crowdsec::{Lapi, NewDecision};
use hyper::Method;
use serde_json::{json, Value};

const KEY_A: &str = "groundzero-push-test-key-node-a-0123456789";
const KEY_B: &str = "groundzero-push-test-key-node-b-0123456789";
const PASSWORD: &str = "groundzero-push-test-password-0123456789";
/// How soon a ban on A must be a decision on the LAPI (a 500 ms push interval, a login and a
/// POST, on a loaded machine) and then in B's maps (B pulls every second).
const ARRIVAL: Duration = Duration::from_secs(15);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn blocked(pin_dir: &Path) -> BTreeSet<IpNet> {
    Kernel::open(pin_dir).blocked()
}

fn status(d: &TestDaemon) -> Value {
    d.ok(Method::GET, "/v1/crowdsec", None)
}

/// A file in the temp dir holding `text`, unique to this process and `name`.
fn secret(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("gz-cs-push-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// `[crowdsec.push]` as node A's: `node-a`, pushes every 500 ms; `extra` in `[crowdsec]`
/// (before the push table).
fn push_config(lapi: &Lapi, password_file: &Path, extra: &str) -> String {
    format!(
        "[crowdsec]\nlapi_url = \"{}\"\n{extra}\n\
         [crowdsec.push]\nmachine_id = \"node-a\"\npassword_file = {:?}\ninterval = \"500ms\"\n",
        lapi.url(),
        password_file
    )
}

/// The LAPI's live decisions pushed by groundzero (origin `groundzero`), by value.
fn pushed(lapi: &Lapi) -> Vec<Value> {
    lapi.live_decisions()
        .unwrap_or_else(|e| panic!("{e}\n{}", lapi.logs()))
        .into_iter()
        .filter(|d| d["origin"] == "groundzero")
        .collect()
}

fn block(d: &TestDaemon, entries: &[&str], source: &str) {
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": entries, "source": source, "reason": "double sign", "ttl": "1h"})),
    );
}

/// Seconds in a Go duration as the LAPI lists it (`"59m58.1s"`, `"3599s"`): only its sign
/// and rough size matter here.
fn go_seconds(d: &str) -> f64 {
    let mut total = 0.0;
    let mut number = String::new();
    let negative = d.starts_with('-');
    for c in d.trim_start_matches('-').chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            unit => {
                let n: f64 = number.parse().unwrap_or(0.0);
                number.clear();
                total += n * match unit {
                    'h' => 3600.0,
                    'm' => 60.0,
                    's' => 1.0,
                    _ => 0.0,
                };
            }
        }
    }
    if negative {
        -total
    } else {
        total
    }
}

#[test]
fn bans_pushed_by_one_node_are_enforced_by_another_and_crowdsec_entries_are_not_pushed_back() {
    common::require_root();
    let lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_machine("node-a", PASSWORD).unwrap();
    lapi.add_bouncer("gz-push-a", KEY_A).unwrap();
    lapi.add_bouncer("gz-push-b", KEY_B).unwrap();
    let password = secret("password", PASSWORD);
    let key_a = secret("key-a", KEY_A);
    let key_b = secret("key-b", KEY_B);
    // Node A pulls too: what it pulls (cscli's decision, and its own pushes coming back as
    // crowdsec:groundzero) must not be pushed.
    let a = TestDaemon::start(&push_config(
        &lapi,
        &password,
        &format!("api_key_file = {key_a:?}\npull_interval = \"1s\"\nmax_change = 10.0"),
    ));
    let b = TestDaemon::start(&format!(
        "[crowdsec]\nlapi_url = \"{}\"\napi_key_file = {key_b:?}\npull_interval = \"1s\"\nmax_change = 10.0\n",
        lapi.url()
    ));
    lapi.add_decision(&NewDecision::ip("198.18.70.9").reason("crowdsecurity/ssh-bf"))
        .unwrap();
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || blocked(&a.pin_dir)
            .contains(&net("198.18.70.9/32"))),
        "A never pulled cscli's decision: {}",
        status(&a)
    );

    // An application bans an address and a range; an API caller (not pushed by default)
    // another address.
    block(&a, &["198.18.70.1", "198.18.71.0/24"], "app:validator");
    block(&a, &["198.18.70.2"], "api");
    // Applied locally at once, whatever the LAPI does.
    let here = blocked(&a.pin_dir);
    for n in ["198.18.70.1/32", "198.18.71.0/24", "198.18.70.2/32"] {
        assert!(here.contains(&net(n)), "{n} not in A's maps: {here:?}");
    }

    // On the LAPI: one decision each, scope Ip/Range as a bouncer needs it, positive duration.
    let mut decisions = Vec::new();
    let arrived = wait_for(ARRIVAL, Duration::from_millis(250), || {
        decisions = pushed(&lapi);
        decisions.len() >= 2
    });
    assert!(
        arrived,
        "pushes never reached the LAPI: {decisions:?}\nA: {}\n{}",
        status(&a),
        lapi.logs()
    );
    let find = |value: &str| {
        decisions
            .iter()
            .find(|d| d["value"] == value)
            .unwrap_or_else(|| panic!("no pushed decision on {value}: {decisions:?}"))
            .clone()
    };
    let ip = find("198.18.70.1");
    assert_eq!(ip["scope"], "Ip", "{ip}");
    assert_eq!(ip["type"], "ban", "{ip}");
    assert_eq!(ip["scenario"], "groundzero/app:validator", "{ip}");
    let seconds = go_seconds(ip["duration"].as_str().unwrap_or(""));
    assert!(
        seconds > 3000.0 && seconds <= 3600.0,
        "a 1h ban pushed with {ip}"
    );
    let range = find("198.18.71.0/24");
    assert_eq!(range["scope"], "Range", "{range}");
    assert!(go_seconds(range["duration"].as_str().unwrap_or("")) > 3000.0);

    // Node B enforces them in its kernel maps, as crowdsec:groundzero.
    let arrived = wait_for(ARRIVAL, Duration::from_millis(100), || {
        let b_maps = blocked(&b.pin_dir);
        b_maps.contains(&net("198.18.70.1/32")) && b_maps.contains(&net("198.18.71.0/24"))
    });
    assert!(
        arrived,
        "B's maps: {:?}\nB: {}",
        blocked(&b.pin_dir),
        status(&b)
    );
    let b_status = status(&b);
    assert_eq!(
        b_status["entries"]["crowdsec:groundzero"]["ip"], 1,
        "{b_status}"
    );
    assert_eq!(
        b_status["entries"]["crowdsec:groundzero"]["range"], 1,
        "{b_status}"
    );
    assert!(
        !blocked(&b.pin_dir).contains(&net("198.18.70.2/32")),
        "an api ban was pushed (sources defaults to auto-ban and app)"
    );

    // A pulled its own pushes back (crowdsec:groundzero) and holds cscli's decision: several
    // push intervals later, still only the two app bans went out.
    assert!(wait_for(ARRIVAL, Duration::from_millis(100), || {
        status(&a)["entries"]["crowdsec:groundzero"]["ip"] == 1
    }));
    std::thread::sleep(Duration::from_secs(2));
    let a_status = status(&a);
    let push = &a_status["push"];
    assert_eq!(push["pushed_alerts"], 2, "{a_status}");
    assert_eq!(push["queued"], 0, "{a_status}");
    assert_eq!(push["push_errors"], 0, "{a_status}");
    assert_eq!(push["machine_id"], "node-a", "{a_status}");
    assert!(push["last_push"].as_u64().is_some(), "{a_status}");
    // The one-line state in `GET /v1/feeds` and `GET /v1/stats`.
    for path in ["/v1/feeds", "/v1/stats"] {
        let v = a.ok(Method::GET, path, None);
        let c = &v["crowdsec"];
        assert_eq!(c["pull"], true, "{path}: {v}");
        assert_eq!(c["pushed_alerts"], 2, "{path}: {v}");
        assert_eq!(c["queued"], 0, "{path}: {v}");
        assert!(c["last_success"].as_u64().is_some(), "{path}: {v}");
        assert!(c["decisions"].as_u64().unwrap_or(0) >= 3, "{path}: {v}");
    }
    let decisions = pushed(&lapi);
    assert_eq!(
        decisions.len(),
        2,
        "only the app bans are groundzero's decisions: {decisions:?}"
    );

    // A re-ban that only extends a hold pushes nothing; a new address does.
    block(&a, &["198.18.70.1"], "app:validator");
    block(&a, &["2001:2::7"], "app:validator");
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || blocked(&b.pin_dir)
            .contains(&net("2001:2::7/128"))),
        "an IPv6 ban never reached B: {}",
        status(&a)
    );
    assert_eq!(status(&a)["push"]["pushed_alerts"], 3);
}

#[test]
fn a_lapi_outage_never_blocks_a_ban_and_a_wrong_password_is_counted() {
    common::require_root();
    let mut lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_machine("node-a", PASSWORD).unwrap();
    let password = secret("password2", PASSWORD);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Push only (no api_key_file): the pull is off.
    let a = TestDaemon::start(&format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ncache_for = \"0s\"\n",
        push_config(&lapi, &password, "")
    ));
    let metrics = || {
        ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };
    let s = status(&a);
    assert_eq!(s["enabled"], false, "push only: no pull {s}");
    assert_eq!(s["push"]["lapi_url"], lapi.url(), "{s}");

    lapi.stop();
    block(&a, &["198.18.72.1", "198.18.72.2"], "app:validator");
    assert!(
        blocked(&a.pin_dir).contains(&net("198.18.72.1/32")),
        "the ban waited for the LAPI"
    );
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || {
            status(&a)["push"]["consecutive_errors"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        }),
        "{}",
        status(&a)
    );
    let s = status(&a);
    assert_eq!(s["push"]["queued"], 2, "kept for later: {s}");
    assert!(
        s["push"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("/v1/watchers/login")),
        "{s}"
    );
    let text = metrics();
    assert!(
        text.lines()
            .any(|l| l == "groundzero_crowdsec_push_queue_length 2"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l == "groundzero_crowdsec_push_errors_total 0"),
        "{text}"
    );

    // Back: the queued bans go out (after a back-off of a few seconds at most).
    lapi.restart().unwrap();
    let mut decisions = Vec::new();
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
            decisions = pushed(&lapi);
            decisions.len() == 2
        }),
        "after the restart: {decisions:?}\n{}",
        status(&a)
    );
    let s = status(&a);
    assert_eq!(s["push"]["queued"], 0, "{s}");
    assert_eq!(s["push"]["pushed_alerts"], 2, "{s}");
    assert_eq!(s["push"]["error"], Value::Null, "{s}");
    let text = metrics();
    assert!(
        text.lines()
            .any(|l| l == "groundzero_crowdsec_pushed_alerts_total 2"),
        "{text}"
    );

    // A wrong password: refused, visible, counted; the ban holds locally.
    let wrong = secret("wrong", "not-the-password");
    let c = TestDaemon::start(&push_config(&lapi, &wrong, ""));
    block(&c, &["198.18.72.3"], "app:validator");
    assert!(blocked(&c.pin_dir).contains(&net("198.18.72.3/32")));
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || {
            status(&c)["push"]["push_errors"].as_u64().unwrap_or(0) >= 1
        }),
        "{}",
        status(&c)
    );
    let s = status(&c);
    let error = s["push"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("HTTP 401") && error.contains("refused the machine's credentials"),
        "{s}"
    );
    assert!(
        !pushed(&lapi).iter().any(|d| d["value"] == "198.18.72.3"),
        "pushed with a wrong password"
    );
}

/// Sends SIGHUP and waits (up to 10 s) until the log has one more line containing `marker`.
fn hup_and_wait(d: &common::child::ChildDaemon, marker: &str) {
    let before = d.log_text().matches(marker).count();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(50), || d
            .log_text()
            .matches(marker)
            .count()
            > before),
        "no `{marker}` in the log within 10 s of SIGHUP:\n{}",
        d.log_text()
    );
}

#[test]
fn sighup_applies_a_changed_crowdsec_section_and_keeps_the_running_one_on_a_bad_one() {
    use common::{
        child::{self, ChildDaemon, Workdir},
        topology::Topology,
    };
    common::require_root();
    let topo = Topology::new("cp");
    // This thread (and what it starts: the LAPI, cscli) lives in the node's namespace, where
    // the daemon runs, so that both meet on the namespace's loopback.
    let f = std::fs::File::open(format!("/run/netns/{}", topo.node.name())).unwrap();
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let lapi = Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"));
    lapi.add_bouncer("gz-hup", KEY_A).unwrap();
    lapi.add_machine("node-a", PASSWORD).unwrap();
    lapi.add_decision(&NewDecision::ip("198.18.90.1")).unwrap();
    lapi.add_decision(&NewDecision::range("198.18.91.0/24"))
        .unwrap();
    let mut work = Workdir::new("cshup");
    let key = work.path("key");
    std::fs::write(&key, KEY_A).unwrap();
    let password = work.path("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let dev = topo.node_if.clone();
    let pin = work.pin_dir("a");
    let (state, socket, config) = (
        work.path("state"),
        work.path("api.sock"),
        work.path("gz.toml"),
    );
    let pull = |scopes: &str| {
        format!(
            "[crowdsec]\nlapi_url = \"{}\"\napi_key_file = {key:?}\npull_interval = \"1s\"\n\
             max_change = 10.0\nscopes = {scopes}\n",
            lapi.url()
        )
    };
    let text = |extra: &str| child::config_text(&[&dev], &pin, &state, &socket, extra);
    // Ranges only, no push.
    std::fs::write(&config, text(&pull("[\"range\"]"))).unwrap();
    let d = ChildDaemon::start(&config, &socket, &work.path("gz.log"), Some(&topo.node));
    let prog = child::xdp_prog_id(&topo.node, &dev).expect("the XDP program on the interface");
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || blocked(&pin)
            .contains(&net("198.18.91.0/24"))),
        "{}",
        d.log_text()
    );
    assert!(!blocked(&pin).contains(&net("198.18.90.1/32")));
    let crowdsec = |d: &ChildDaemon| d.request("GET", "/v1/crowdsec", None).json().unwrap();
    assert_eq!(crowdsec(&d)["push"], Value::Null);

    // Both scopes, and a push (and a rate limit, for an auto-ban): the address decision
    // arrives, app bans and auto-bans go out.
    std::fs::write(
        &config,
        text(&format!(
            "{}[crowdsec.push]\nmachine_id = \"node-a\"\npassword_file = {password:?}\ninterval = \"500ms\"\n\
             [ratelimit]\nrate = 50\nburst = 50\nban_ttl = \"2m\"\n",
            pull("[\"ip\", \"range\"]")
        )),
    )
    .unwrap();
    hup_and_wait(&d, "reload: configuration applied");
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || blocked(&pin)
            .contains(&net("198.18.90.1/32"))),
        "the reloaded pull never applied the Ip decision: {}",
        crowdsec(&d)
    );
    assert!(
        blocked(&pin).contains(&net("198.18.91.0/24")),
        "the range left the maps"
    );
    let r = d.request(
        "POST",
        "/v1/block",
        Some(&json!({"entries": ["198.18.90.5"], "source": "app:validator", "ttl": "1h"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(250), || pushed(&lapi)
            .iter()
            .any(|x| x["value"] == "198.18.90.5" && x["scope"] == "Ip")),
        "the push configured by SIGHUP never pushed: {}",
        crowdsec(&d)
    );

    // An auto-ban: a source flooding the node's interface (600 datagrams at once, 12 x the
    // burst) is banned by the rate limit and the ban is pushed with its TTL.
    let flooder = common::topology::FLOOD[0];
    topo.send(
        flooder,
        std::net::SocketAddr::new(common::topology::NODE[0].parse().unwrap(), 9),
        600,
    );
    let mut auto = Vec::new();
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(250), || {
            auto = pushed(&lapi)
                .into_iter()
                .filter(|x| x["scenario"] == "groundzero/auto-ban")
                .collect();
            !auto.is_empty()
        }),
        "no auto-ban pushed: {}\nentries: {}",
        crowdsec(&d),
        d.request("GET", "/v1/entries?source=auto-ban", None).text()
    );
    assert_eq!(auto[0]["value"], flooder, "{auto:?}");
    assert_eq!(auto[0]["scope"], "Ip", "{auto:?}");
    let seconds = go_seconds(auto[0]["duration"].as_str().unwrap_or(""));
    assert!(seconds > 60.0 && seconds <= 120.0, "a 2m ban: {auto:?}");
    assert!(blocked(&pin).contains(&net(&format!("{flooder}/32"))));

    // A bad [crowdsec]: logged, the running one stays (still pulling, still pushing).
    std::fs::write(
        &config,
        text("[crowdsec]\nlapi_url = \"lapi:8080\"\napi_key_file = \"/nonexistent\"\n"),
    )
    .unwrap();
    hup_and_wait(&d, "SIGHUP: not reloaded, the running config stays");
    assert!(
        d.log_text().contains("crowdsec.lapi_url"),
        "{}",
        d.log_text()
    );
    let pulls = crowdsec(&d)["pulls"].as_u64().unwrap();
    assert!(
        wait_for(ARRIVAL, Duration::from_millis(100), || crowdsec(&d)
            ["pulls"]
            .as_u64()
            .unwrap()
            > pulls + 1),
        "the bouncer stopped pulling after a bad reload: {}",
        crowdsec(&d)
    );
    let s = crowdsec(&d);
    assert_eq!(s["lapi_url"], lapi.url(), "{s}");
    assert_eq!(s["push"]["machine_id"], "node-a", "{s}");
    assert_eq!(
        child::xdp_prog_id(&topo.node, &dev),
        Some(prog),
        "XDP was detached or replaced"
    );
    for n in ["198.18.90.1/32", "198.18.91.0/24", "198.18.90.5/32"] {
        assert!(blocked(&pin).contains(&net(n)), "{n} left the maps");
    }
}
