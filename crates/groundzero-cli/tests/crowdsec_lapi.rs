//! The real CrowdSec LAPI harness (`groundzero_lab::crowdsec`) against plain HTTP: what a bouncer
//! pulls from Debian's crowdsec 1.4.6, and each behaviour of it the bouncer relies on (listed
//! in the harness's module docs).
//!
//! Needs the unpacked crowdsec of `scripts/setup.sh` (fails loudly without it); not root.

use std::{
    collections::BTreeSet,
    thread::sleep,
    time::{Duration, Instant},
};

use groundzero_lab::crowdsec::{DeleteFilter, Lapi, NewDecision};
use serde_json::Value;

const KEY: &str = "groundzero-test-key-0123456789";

fn start() -> Lapi {
    Lapi::start().unwrap_or_else(|e| panic!("starting the real LAPI: {e}"))
}

/// `GET url` with an optional `X-Api-Key`: status and body.
fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(url).timeout(Duration::from_secs(10));
    if let Some(key) = key {
        request = request.set("X-Api-Key", key);
    }
    match request.call() {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// One pull of the decision stream with `key`, as JSON (the status must be 200).
fn pull(lapi: &Lapi, key: &str, startup: bool) -> Value {
    let url = format!(
        "{}/v1/decisions/stream{}",
        lapi.url(),
        if startup { "?startup=true" } else { "" }
    );
    let (status, body) = get(&url, Some(key));
    assert_eq!(status, 200, "{url}: {body}\n{}", lapi.logs());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} gave no JSON ({e}): {body}"))
}

/// The decisions of one list (`new` or `deleted`); `null` must be the only empty form.
fn list<'a>(stream: &'a Value, name: &str) -> &'a [Value] {
    match &stream[name] {
        Value::Null => &[],
        Value::Array(items) => {
            assert!(
                !items.is_empty(),
                "an empty {name} list came as [] not null"
            );
            items
        }
        other => panic!("{name} is neither null nor a list: {other}"),
    }
}

fn values(decisions: &[Value]) -> BTreeSet<String> {
    decisions
        .iter()
        .map(|d| d["value"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(decisions: &'a [Value], value: &str) -> &'a Value {
    decisions
        .iter()
        .find(|d| d["value"] == value)
        .unwrap_or_else(|| panic!("no decision on {value} in {decisions:?}"))
}

fn is_negative_go_duration(d: &Value) -> bool {
    d["duration"]
        .as_str()
        .is_some_and(|s| s.starts_with('-') && s.len() > 1)
}

#[test]
fn startup_pull_returns_what_cscli_added_then_deltas_follow() {
    let lapi = start();

    // No key, a wrong key: 403 before any bouncer exists.
    let stream = format!("{}/v1/decisions/stream?startup=true", lapi.url());
    assert_eq!(get(&stream, None).0, 403);
    lapi.add_bouncer("gz-test", KEY).unwrap();
    assert_eq!(get(&stream, Some("not-the-key")).0, 403);

    // Empty lists are null, not [].
    let empty = pull(&lapi, KEY, true);
    assert_eq!(
        empty,
        serde_json::json!({"deleted": null, "new": null}),
        "an empty startup stream"
    );

    for d in [
        NewDecision::ip("203.0.113.7")
            .duration("2h")
            .reason("crowdsecurity/ssh-bf"),
        NewDecision::range("198.51.100.0/24").reason("range-reason"),
        // Neither normalised by the LAPI.
        NewDecision::ip("2001:0DB8:0000::0001").duration("30m"),
        NewDecision::range("192.0.2.77/24"),
        // Not a ban: a bouncer must filter on type.
        NewDecision::ip("203.0.113.8").kind("captcha"),
    ] {
        lapi.add_decision(&d).unwrap();
    }

    let startup = pull(&lapi, KEY, true);
    assert_eq!(list(&startup, "deleted"), &[] as &[Value]);
    let new = list(&startup, "new");
    assert_eq!(
        values(new),
        [
            "192.0.2.77/24",
            "198.51.100.0/24",
            "2001:0DB8:0000::0001",
            "203.0.113.7",
            "203.0.113.8"
        ]
        .map(String::from)
        .into(),
        "values exactly as entered: {new:?}"
    );
    for d in new {
        let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["duration", "id", "origin", "scenario", "scope", "type", "value"],
            "{d}"
        );
        assert_eq!(d["origin"], "cscli", "{d}");
        assert!(d["id"].as_u64().is_some(), "{d}");
        let duration = d["duration"].as_str().unwrap();
        assert!(
            !duration.starts_with('-') && duration.ends_with('s'),
            "a live decision's remaining time is a positive Go duration: {d}"
        );
    }
    let ssh = find(new, "203.0.113.7");
    assert_eq!(ssh["scope"], "Ip");
    assert_eq!(ssh["type"], "ban");
    assert_eq!(ssh["scenario"], "crowdsecurity/ssh-bf", "reason = scenario");
    let remaining = ssh["duration"].as_str().unwrap();
    assert!(
        remaining.starts_with("1h59m"),
        "2h decision: remaining {remaining}"
    );
    assert_eq!(find(new, "198.51.100.0/24")["scope"], "Range");
    assert_eq!(find(new, "198.51.100.0/24")["scenario"], "range-reason");
    assert!(find(new, "2001:0DB8:0000::0001")["duration"]
        .as_str()
        .unwrap()
        .starts_with("29m"));
    assert_eq!(find(new, "203.0.113.8")["type"], "captcha");

    // The lab's own view (what a retried import checks) is the same set, read under its own
    // key: the delta below shows it moved no other consumer's pull position.
    let served: BTreeSet<String> = lapi.served_values().unwrap().into_iter().collect();
    assert_eq!(served, values(new));

    // Nothing changed since the startup pull.
    assert_eq!(
        pull(&lapi, KEY, false),
        serde_json::json!({"deleted": null, "new": null})
    );

    // A new decision arrives in the next delta, alone.
    lapi.add_decision(&NewDecision::ip("203.0.113.50")).unwrap();
    let delta = pull(&lapi, KEY, false);
    assert_eq!(
        values(list(&delta, "new")),
        ["203.0.113.50".to_string()].into()
    );
    assert_eq!(list(&delta, "deleted"), &[] as &[Value]);

    // Deleting an address inside a banned range deletes the whole range decision.
    let deleted = lapi
        .delete_decisions(&DeleteFilter::Ip("198.51.100.9".into()))
        .unwrap();
    assert_eq!(deleted, 1);
    let delta = pull(&lapi, KEY, false);
    assert_eq!(list(&delta, "new"), &[] as &[Value]);
    let gone = list(&delta, "deleted");
    assert_eq!(values(gone), ["198.51.100.0/24".to_string()].into());
    assert!(
        is_negative_go_duration(&gone[0]),
        "a deleted decision has a negative duration: {}",
        gone[0]
    );

    // The deletion comes again in a delta pulled soon after: deletions must be idempotent.
    sleep(Duration::from_millis(500));
    let again = pull(&lapi, KEY, false);
    assert_eq!(
        values(list(&again, "deleted")),
        ["198.51.100.0/24".to_string()].into(),
        "the repeated deletion: {again}"
    );
    // ... and stops coming once pulls are a few seconds apart.
    let quiet = wait_until(Duration::from_secs(15), || {
        sleep(Duration::from_secs(3));
        pull(&lapi, KEY, false) == serde_json::json!({"deleted": null, "new": null})
    });
    assert!(quiet, "the deletion never stopped repeating");

    // A startup pull lists recent deletions as well as the live set.
    let startup = pull(&lapi, KEY, true);
    assert!(
        values(list(&startup, "deleted")).contains("198.51.100.0/24"),
        "{startup}"
    );
    assert!(!values(list(&startup, "new")).contains("198.51.100.0/24"));
    assert_eq!(list(&startup, "new").len(), 5);

    // Revoking the key: 403 again.
    lapi.delete_bouncer("gz-test").unwrap();
    assert_eq!(get(&stream, Some(KEY)).0, 403);
}

#[test]
fn expiry_keys_durations_and_restart() {
    let mut lapi = start();
    lapi.add_bouncer("gz-a", KEY).unwrap();
    lapi.add_bouncer("gz-b", "groundzero-other-key-987654321")
        .unwrap();
    pull(&lapi, KEY, true);
    pull(&lapi, "groundzero-other-key-987654321", true);

    // Durations are Go durations: `1d` is refused (the LAPI's validation error).
    let err = lapi
        .add_decision(&NewDecision::ip("203.0.113.60").duration("1d"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown unit"), "{err}");

    // An expired decision comes as a deletion with a negative duration.
    lapi.add_decision(&NewDecision::ip("203.0.113.61").duration("2s"))
        .unwrap();
    let delta = pull(&lapi, KEY, false);
    assert_eq!(
        values(list(&delta, "new")),
        ["203.0.113.61".to_string()].into()
    );
    sleep(Duration::from_secs(3));
    let delta = pull(&lapi, KEY, false);
    let expired = list(&delta, "deleted");
    assert_eq!(values(expired), ["203.0.113.61".to_string()].into());
    assert!(is_negative_go_duration(&expired[0]), "{}", expired[0]);

    // Each key has its own pull position: key B still gets what key A already pulled.
    let other = pull(&lapi, "groundzero-other-key-987654321", false);
    assert!(
        values(list(&other, "new")).contains("203.0.113.61")
            || values(list(&other, "deleted")).contains("203.0.113.61"),
        "{other}"
    );

    // Stopped: connection refused. Restarted: same port, same database, same keys.
    lapi.add_decision(&NewDecision::range("2001:db8:1::/48"))
        .unwrap();
    lapi.stop();
    assert!(!lapi.is_running());
    assert!(
        ureq::get(&format!("{}/v1/decisions/stream", lapi.url()))
            .timeout(Duration::from_secs(2))
            .call()
            .is_err_and(|e| matches!(e, ureq::Error::Transport(_))),
        "a stopped LAPI must not answer"
    );
    lapi.restart().unwrap();
    assert!(lapi.is_running());
    let startup = pull(&lapi, KEY, true);
    assert!(
        values(list(&startup, "new")).contains("2001:db8:1::/48"),
        "{startup}"
    );
}

/// Calls `ok` until it says yes or `limit` passes.
fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
    }
    false
}

#[test]
fn machines_can_log_in_and_the_directory_goes_on_drop() {
    let lapi = start();
    let creds = lapi
        .add_machine("gz-watcher", "a-long-password-0123456789")
        .unwrap();
    let resp = ureq::post(&format!("{}/v1/watchers/login", lapi.url()))
        .timeout(Duration::from_secs(10))
        .send_json(serde_json::json!({
            "machine_id": creds.login,
            "password": creds.password,
            "scenarios": [],
        }))
        .unwrap_or_else(|e| panic!("login: {e}\n{}", lapi.logs()));
    assert_eq!(resp.status(), 200);
    let body: Value = resp.into_json().unwrap();
    assert!(
        body["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );

    let config = lapi.config_path();
    let addr = lapi.addr();
    assert!(config.is_file());
    drop(lapi);
    assert!(!config.exists(), "the LAPI's directory outlived it");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the LAPI still listens after drop"
    );
}
