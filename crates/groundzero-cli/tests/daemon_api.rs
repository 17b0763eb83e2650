//! The management API over the real Unix socket and TCP listener: every operation, every kind
//! of bad input (with the message that names it), TTL expiry, capacity, the lockout guard.
mod common;

use std::time::{Duration, Instant};

use common::daemon::{post_raw, TestDaemon};
use groundzero_api::client::ClientError;
use hyper::Method;
use serde_json::{json, Value};

fn api_err(r: Result<Value, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn listed(d: &TestDaemon, query: &str) -> Vec<String> {
    let v = d.ok(Method::GET, &format!("/v1/entries{query}"), None);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn block_list_why_unblock_with_metadata() {
    let d = TestDaemon::start("[guard]\nprotect_management = false");
    let r = d.ok(Method::POST, "/v1/block", Some(json!({"entries": ["198.18.5.5", "2001:2::5", "198.19.0.0/16"], "reason": "scanner", "ttl": "1h"})));
    assert_eq!(r["added"], 3);
    d.ok(
        Method::POST,
        "/v1/allow",
        Some(json!({"entries": ["198.19.7.0/24"], "reason": "partner"})),
    );

    let v = d.ok(Method::GET, "/v1/entries?list=block", None);
    let e = &v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entry"] == "198.18.5.5/32")
        .unwrap()
        .clone();
    assert_eq!(e["kind"], "exact");
    assert_eq!(e["holders"][0]["source"], "api");
    assert_eq!(e["holders"][0]["reason"], "scanner");
    let created = e["holders"][0]["created"].as_u64().unwrap();
    assert_eq!(e["holders"][0]["expires"].as_u64().unwrap(), created + 3600);

    let why = d.ok(Method::GET, "/v1/why/198.19.7.9", None);
    assert_eq!(
        (why["verdict"].as_str(), why["reason"].as_str()),
        (Some("pass"), Some("allowlisted"))
    );
    assert_eq!(why["matched"]["entry"], "198.19.7.0/24");
    assert_eq!(
        why["also_matching"][0]["entry"], "198.19.0.0/16",
        "the block under the allow is shown"
    );
    let why = d.ok(Method::GET, "/v1/why/198.19.1.1", None);
    assert_eq!(
        (why["verdict"].as_str(), why["reason"].as_str()),
        (Some("drop"), Some("blocked_cidr"))
    );
    assert_eq!(why["matched"]["holders"][0]["reason"], "scanner");
    let why = d.ok(Method::GET, "/v1/why/2001:2::5", None);
    assert_eq!(why["reason"], "blocked_exact");
    let why = d.ok(Method::GET, "/v1/why/192.0.2.1", None);
    assert_eq!(why["reason"], "no_match");
    assert!(why.get("matched").is_none());

    d.ok(Method::PUT, "/v1/monitor", Some(json!({"enabled": true})));
    assert_eq!(
        d.ok(Method::GET, "/v1/why/2001:2::5", None)["reason"],
        "monitor_exact"
    );
    assert_eq!(d.ok(Method::GET, "/v1/stats", None)["monitor"], true);
    d.ok(Method::PUT, "/v1/monitor", Some(json!({"enabled": false})));

    let r = d.ok(
        Method::POST,
        "/v1/unblock",
        Some(json!({"entries": ["198.18.5.5", "203.0.113.1"]})),
    );
    assert_eq!(r["removed"], json!(["198.18.5.5/32"]));
    let blocks = listed(&d, "?list=block");
    assert_eq!(blocks.len(), 2);
    assert!(
        blocks.contains(&"2001:2::5/128".to_string())
            && blocks.contains(&"198.19.0.0/16".to_string())
    );
}

#[test]
fn bad_requests_get_a_4xx_that_names_the_problem_and_change_nothing() {
    let d =
        TestDaemon::start("[guard]\nprotect_management = false\nprotected = [\"198.18.77.0/24\"]");
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"entries": ["198.18.1.1", "198.18.1.300"]}),
            400,
            "entries[1]: `198.18.1.300` is not an IP address",
        ),
        (
            json!({"entries": ["198.18.1.1/24"]}),
            400,
            "did you mean 198.18.1.0/24?",
        ),
        (json!({"entries": []}), 400, "`entries` is empty"),
        (
            json!({"entries": ["198.18.1.1"], "ttl": "soon"}),
            400,
            "ttl `soon`",
        ),
        (
            json!({"entries": ["198.18.1.1"], "source": "feed:x"}),
            400,
            "source `feed:x`",
        ),
        (
            json!({"entries": ["198.18.1.1"], "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
        (json!({"entries": "198.18.1.1"}), 400, "invalid type"),
        (
            json!({"entries": ["198.18.1.1", "198.18.77.5"], "all_or_nothing": true}),
            409,
            "would cover 198.18.77.0/24 (a protected prefix",
        ),
        (
            json!({"entries": ["198.18.77.5"]}),
            409,
            "would cover 198.18.77.0/24 (a protected prefix",
        ),
        (
            json!({"entries": ["198.18.1.1"], "ttl": "18446744073709551615s"}),
            400,
            "ttl `18446744073709551615s`",
        ),
        (
            json!({"entries": ["198.18.1.1"], "ttl": "3651d"}),
            400,
            "at most 10 years",
        ),
        (
            json!({"entries": ["198.18.1.1"], "reason": "\u{1b}[2J\u{1b}[31mPWNED"}),
            400,
            "reason: ",
        ),
        (
            json!({"entries": ["198.18.1.1"], "reason": "x".repeat(401)}),
            400,
            "reason: ",
        ),
        (json!({"entries": ["0.0.0.0/0"]}), 409, "wider than /8"),
    ];
    for (body, status, needle) in cases {
        let (got, message) = api_err(d.call(Method::POST, "/v1/block", Some(body.clone())));
        assert_eq!(got, status, "{body}: {message}");
        assert!(
            message.contains(needle),
            "{body}: {message:?} lacks {needle:?}"
        );
    }
    assert!(listed(&d, "").is_empty(), "nothing was half applied");
    let kernel = common::state::Kernel::open(&d.pin_dir);
    assert!(kernel.keys().is_empty(), "nothing reached the kernel maps");

    // By default one protected entry does not cancel the rest of the batch: each entry gets
    // its own result, and exactly the accepted ones reach the kernel.
    let v = d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.1.1", "198.18.77.5", "198.18.1.1", "198.18.1.2"]})),
    );
    assert_eq!(
        (&v["entries"], &v["added"], &v["applied"], &v["refused"]),
        (&json!(3), &json!(2), &json!(2), &json!(1)),
        "a duplicate counts once: {v}"
    );
    let statuses: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["entry"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("198.18.1.1/32", "added"),
            ("198.18.77.5/32", "refused"),
            ("198.18.1.2/32", "added")
        ]
    );
    let in_kernel: Vec<String> = kernel.keys().iter().map(|(_, n)| n.to_string()).collect();
    assert_eq!(in_kernel, ["198.18.1.1/32", "198.18.1.2/32"]);
    let v = d.ok(
        Method::POST,
        "/v1/unblock",
        Some(json!({"entries": ["198.18.1.1", "198.18.1.2"]})),
    );
    assert_eq!(v["removed"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(kernel.keys().is_empty());
    assert_eq!(listed(&d, "?limit=0").len(), 0, "limit=0 is no entries");

    // Every error is JSON, including the router's own.
    let (status, message) = api_err(d.call(Method::GET, "/v1/block", None));
    assert_eq!(status, 405, "{message}");
    assert!(
        message.contains("GET is not allowed on /v1/block"),
        "{message}"
    );
    let (status, message) = api_err(d.call(Method::GET, "/v1/why/%C0%AE", None));
    assert_eq!(status, 400, "{message}");
    let (status, message) = api_err(d.call(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "n".repeat(251), "text": "198.18.9.9\n"})),
    ));
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("1 to 100 letters"), "{message}");
    assert!(
        kernel.keys().is_empty(),
        "a refused import leaves nothing in the kernel"
    );

    let (status, body) = post_raw(&d.socket, "/v1/block", "{\"entries\": [\"198.18.1.1\"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\"") && body.contains("EOF"), "{body}");
    let (status, body) = post_raw(&d.socket, "/v1/nope", "{}");
    assert_eq!(status, 404, "{body}");
    let (status, _) = post_raw(
        &d.socket,
        "/v1/block",
        &format!("{{\"entries\": [\"{}\"]}}", "1".repeat(70 << 20)),
    );
    assert_eq!(status, 413, "oversized bodies are refused");
    let (status, message) = api_err(d.call(Method::GET, "/v1/why/not-an-ip", None));
    assert_eq!(
        (status, message.as_str()),
        (400, "`not-an-ip` is not an IP address")
    );

    // The guard yields to force, and protects the allowlist too.
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.77.5"], "force": true})),
    );
    d.ok(
        Method::POST,
        "/v1/allow",
        Some(json!({"entries": ["198.18.88.0/24"]})),
    );
    let (status, message) = api_err(d.call(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.0.0/16"]})),
    ));
    assert_eq!(status, 409, "{message}");
}

#[test]
fn ttl_expires_without_anyone_acting() {
    let d = TestDaemon::start("[guard]\nprotect_management = false");
    d.ok(
        Method::POST,
        "/v1/block",
        Some(
            json!({"entries": ["198.18.6.6"], "ttl": "3s", "source": "auto-ban", "reason": "rate"}),
        ),
    );
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.6.7"]})),
    );
    // 3 s, not 1: times are whole seconds and expiry is checked once a second, so a 1 s TTL
    // may end after anything from 0 to 2 s, possibly before this first look.
    assert_eq!(listed(&d, "?source=auto-ban"), ["198.18.6.6/32"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&d, "").len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the 3s TTL did not expire within 10s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed(&d, ""), ["198.18.6.7/32"]);
}

#[test]
fn a_full_map_is_507_and_nothing_is_half_applied() {
    let d = TestDaemon::start("[guard]\nprotect_management = false\n[capacity]\nexact = 4");
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.8.1", "198.18.8.2"]})),
    );
    let (status, message) = api_err(d.call(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.8.3", "198.18.8.4", "198.18.8.5"]})),
    ));
    assert_eq!(status, 507, "{message}");
    assert!(message.contains("is full (4 entries)"), "{message}");
    assert_eq!(listed(&d, "").len(), 2);
    assert!(
        d.ok(Method::GET, "/v1/stats", None)["failed_inserts"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn tcp_listener_requires_the_bearer_token() {
    let dir = std::env::temp_dir().join(format!("gz-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = TestDaemon::start(&format!(
        "[api]\ntcp_listen = \"127.0.0.1:{port}\"\ntoken_file = {token_file:?}\n[guard]\nprotect_management = false"
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tcp = |token: &str| {
        groundzero_api::client::Client::new(groundzero_api::client::Endpoint::Tcp {
            address: format!("127.0.0.1:{port}"),
            token: token.to_string(),
        })
    };
    let body = json!({"entries": ["198.18.9.9"]});
    let (status, message) =
        api_err(rt.block_on(tcp("wrong").call(Method::POST, "/v1/block", Some(&body))));
    assert_eq!(
        (status, message.as_str()),
        (401, "missing or wrong bearer token")
    );
    rt.block_on(tcp("s3cret-token-0123456789").call(Method::POST, "/v1/block", Some(&body)))
        .unwrap();
    assert_eq!(listed(&d, ""), ["198.18.9.9/32"]);
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_subcommands_are_clients_of_the_api() {
    let d = TestDaemon::start("[guard]\nprotect_management = false");
    let gz = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_groundzero"))
            .args(args)
            .env("GROUNDZERO_SOCKET", &d.socket)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = gz(&[
        "block",
        "198.18.4.4",
        "--reason",
        "cli test",
        "--ttl",
        "10m",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = gz(&["list"]);
    assert!(
        ok && text.contains("198.18.4.4/32") && text.contains("api \"cli test\" ttl"),
        "{text}"
    );
    let (ok, text) = gz(&["why", "198.18.4.4"]);
    assert!(
        ok && text.starts_with("198.18.4.4: DROP (blocked_exact)"),
        "{text}"
    );
    let (ok, text) = gz(&["--json", "why", "198.18.4.4"]);
    assert!(
        ok && serde_json::from_str::<Value>(&text).unwrap()["verdict"] == "drop",
        "{text}"
    );
    let (ok, text) = gz(&["block", "198.18.4.300"]);
    assert!(
        !ok && text.contains("`198.18.4.300` is not an IP address") && text.contains("HTTP 400"),
        "{text}"
    );
    let (ok, text) = gz(&["monitor", "on"]);
    assert!(ok && text.contains("monitor mode on"), "{text}");
    let (ok, text) = gz(&["stats"]);
    assert!(ok && text.contains("monitor: true"), "{text}");
    let (ok, text) = gz(&["unblock", "198.18.4.4"]);
    assert!(ok && text.contains("removed: 198.18.4.4/32"), "{text}");
    let (ok, text) = gz(&["--socket", "/nonexistent/gz.sock", "stats"]);
    assert!(
        !ok && text.contains("cannot reach the groundzero daemon at /nonexistent/gz.sock"),
        "{text}"
    );
}

#[test]
fn a_listener_that_cannot_bind_fails_the_start_before_the_socket_answers() {
    // Held for the whole test: the daemon's metrics listener cannot have it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (error, socket_seen) = TestDaemon::start_err(&format!(
        "[guard]\nprotect_management = false\n[metrics]\nlisten = \"127.0.0.1:{port}\""
    ));
    assert!(
        error.contains(&format!("metrics.listen 127.0.0.1:{port}")),
        "the error names the setting and the address: {error}"
    );
    assert!(
        !socket_seen,
        "the API socket must not appear (a client would take the daemon for healthy)"
    );
}

#[test]
fn the_daemon_serves_metrics_with_sources_and_feeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = TestDaemon::start(&format!(
        "[guard]\nprotect_management = false\n[metrics]\nlisten = \"127.0.0.1:{port}\""
    ));
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.30.1", "198.18.30.2"]})),
    );
    d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["2001:2::30"], "source": "auto-ban", "ttl": "1h"})),
    );
    d.ok(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "imp", "text": "198.18.31.0/24\n198.18.32.1\n"})),
    );
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_string()
    };
    assert!(
        line("groundzero_list_entries{list=\"block\",family=\"ipv4\",source=\"api\"}")
            .ends_with(" 2"),
        "{text}"
    );
    assert!(
        line("groundzero_list_entries{list=\"block\",family=\"ipv6\",source=\"auto-ban\"}")
            .ends_with(" 1"),
        "{text}"
    );
    assert!(
        line("groundzero_list_entries{list=\"block\",family=\"ipv4\",source=\"feed\"}")
            .ends_with(" 2"),
        "{text}"
    );
    assert!(
        line("groundzero_feed_entries{feed=\"imp\"}").ends_with(" 2"),
        "{text}"
    );
    assert!(
        line("groundzero_feed_refresh_success{feed=\"imp\"}").ends_with(" 1"),
        "{text}"
    );
    assert!(
        line("groundzero_map_entries{map=\"block_exact\",family=\"ipv4\"}").ends_with(" 3"),
        "{text}"
    );
}

#[test]
fn a_step_that_fails_after_the_maps_rolls_the_maps_back() {
    let d = TestDaemon::start("[guard]\nprotect_management = false");
    let kernel = common::state::Kernel::open(&d.pin_dir);
    // The feed cache is written after the maps took the import: make that write fail (its
    // temporary file's name is taken by a directory), as a full or read-only disk would.
    let feeds = d.dir.join("state").join("feeds");
    std::fs::create_dir_all(feeds.join("cachefail.tmp").join("x")).unwrap();
    let (status, message) = api_err(d.call(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "cachefail", "text": "198.18.30.1\n198.18.31.0/24\n"})),
    ));
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("cachefail"), "{message}");
    assert!(
        kernel.keys().is_empty(),
        "the kernel kept entries no record accounts for: {:?}",
        kernel.keys()
    );
    assert!(listed(&d, "").is_empty());
    // Once the disk is fine again, the same import applies.
    std::fs::remove_dir_all(feeds.join("cachefail.tmp")).unwrap();
    let v = d.ok(
        Method::POST,
        "/v1/import",
        Some(json!({"name": "cachefail", "text": "198.18.30.1\n198.18.31.0/24\n"})),
    );
    assert_eq!(v["entries"], 2, "{v}");
    assert_eq!(kernel.keys().len(), 2);
}

#[test]
fn the_guard_shows_what_it_protects_and_counts_what_it_refused() {
    let d = TestDaemon::start("[guard]\nprotected = [\"198.18.77.0/24\"]\n");
    d.ok(
        Method::POST,
        "/v1/allow",
        Some(json!({"entries": ["198.18.9.9"]})),
    );
    let v = d.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": ["198.18.1.1", "198.18.77.5", "198.18.9.0/24"]})),
    );
    assert_eq!(v["refused"], 2, "{v}");
    let g = d.ok(Method::GET, "/v1/guard", None);
    assert_eq!(g["configured"], json!(["198.18.77.0/24"]), "{g}");
    assert_eq!(g["allowlist_entries"], 1, "{g}");
    assert_eq!(g["refusals"]["api"], 2, "{g}");
    assert_eq!(g["protect_management"], true);
    assert!(g["error"].is_null(), "{g}");
    // This host's own (non-loopback) addresses are among the protected management addresses,
    // and each is exempt from the rate limit in the kernel too.
    let own: Vec<&str> = g["management"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["why"] == "an address of this host")
        .map(|m| m["entry"].as_str().unwrap())
        .collect();
    assert!(!own.is_empty(), "{g}");
    let exempt: Vec<&str> = g["rate_exempt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for a in &own {
        assert!(exempt.contains(a), "{a} is not rate-exempt: {g}");
    }
    // Blocking one of them is refused like any protected address.
    let (status, message) = api_err(d.call(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [own[0]]})),
    ));
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("an address of this host"), "{message}");
}
