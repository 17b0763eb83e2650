//! A bounded, seeded fuzzer of the management API. Random methods, paths (real endpoints,
//! mutated ones, percent-encoded junk, very long), headers (content types, bogus lengths) and
//! bodies (valid requests mutated: wrong types, huge arrays, giant strings, control characters,
//! TTL extremes, unicode, duplicates, protected addresses, `force`, bad sources). For every
//! answer:
//! - no panic, and no 5xx other than 503 and 507;
//! - an error is JSON `{"error": "..."}`;
//! - after an error nothing changed: the kernel maps (read from the pins), `/v1/entries`, the
//!   monitor flag, and the journal's size;
//! - after a success the kernel maps hold exactly what the API lists;
//! - a few promises of docs/api.md: a TTL's expiry is its length from now, `limit` bounds
//!   `/v1/entries`, `added` counts entries (not duplicates), reasons with control characters
//!   are refused.
//!
//! `GZ_FUZZ_SEED=<n>` replays a run; `GZ_FUZZ_REQUESTS=<n>` changes its length (default 3000).
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    daemon::TestDaemon,
    state::{self, Kernel, Key, Response, View},
};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// The lockout guard protects this prefix; the maps are small so that 507 is reachable; bodies
/// over 1 MiB are refused (413).
const CONFIG: &str = "[guard]\nprotected = [\"198.18.200.0/24\"]\nprotect_management = false\n\
                      [capacity]\nexact = 64\ncidr = 32\nallow = 16\n\
                      [api]\nmax_body_bytes = 1048576\n";
const MAX_BODY: usize = 1 << 20;
/// Above this many entries, the fuzzer clears the lists (snapshots stay cheap).
const CAP: usize = 40;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts every panic in this process (the daemon runs in it): a handler that panics shows up
/// to a client only as a dropped connection.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = PANIC_MESSAGES.lock() {
            m.push(
                info.to_string()
                    .lines()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        previous(info);
    }));
}

/// One request as it goes on the wire, and how it was framed.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The framing is broken on purpose (a Content-Length that lies or is not a number): the
    /// HTTP layer may answer 400 on its own, or (a promise of more body than comes) not at all.
    bad_framing: bool,
    /// Content-Length promises more than is sent: we half-close, and no answer is acceptable.
    short_body: bool,
}

impl Request {
    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    fn describe(&self) -> String {
        let cut = |s: &str, n: usize| -> String {
            if s.chars().count() > n {
                format!(
                    "{}…({} bytes)",
                    s.chars().take(n).collect::<String>(),
                    s.len()
                )
            } else {
                s.to_string()
            }
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", cut(v, 60)))
            .collect();
        format!(
            "{} {} [{}] {}",
            self.method,
            cut(&self.path, 160),
            headers.join("; "),
            cut(&String::from_utf8_lossy(&self.body), 300)
        )
    }

    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("a non-empty list")
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/block"),
    ("POST", "/v1/block"),
    ("POST", "/v1/block"),
    ("POST", "/v1/unblock"),
    ("POST", "/v1/unblock"),
    ("POST", "/v1/allow"),
    ("POST", "/v1/unallow"),
    ("GET", "/v1/entries"),
    ("GET", "/v1/why/198.18.0.1"),
    ("PUT", "/v1/monitor"),
    ("POST", "/v1/import"),
    ("POST", "/v1/import"),
    ("GET", "/v1/health"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/feeds"),
    ("POST", "/v1/feeds/x/refresh"),
    ("GET", "/v1/journey"),
    ("GET", "/v1/journey/recent"),
];

const GOOD_ENTRIES: &[&str] = &[
    "198.18.0.1",
    "198.18.0.2",
    "198.18.0.3",
    "198.18.0.4",
    "198.18.0.9",
    "198.18.1.0/24",
    "198.18.2.0/24",
    "198.18.3.0/24",
    "198.18.4.0/26",
    "198.18.200.5",
    "198.18.200.0/24",
    "198.18.0.0/15",
    "2001:2::1",
    "2001:2::2",
    "2001:2::/64",
    "2001:2:0:1::/64",
    "2001:2::/48",
];

const BAD_ENTRIES: &[&str] = &[
    "198.18.0.1/33",
    "198.18.0.1/24",
    "198.18.0.256",
    "198.18.0.01",
    " 198.18.0.1",
    "198.18.0.1 ",
    "",
    "not-an-address",
    "2001:2::/129",
    "2001:2::1/64",
    "::ffff:198.18.0.1",
    "198.18.0.1/",
    "/24",
    "198.18.0.1/-1",
    "１９８.18.0.1",
    "198.18.0.1\u{0}",
    "fe80::1%eth0",
];

const TTLS: &[&str] = &[
    "0s",
    "1s",
    "2s",
    "90s",
    "1h",
    "7d",
    "18446744073709551615s",
    "18446744073709551616s",
    "99999999999d",
    "584942417355y",
    "-1s",
    "1",
    "s",
    "",
    "1 h",
    "1h30m",
    "100ms",
    "1ns",
    "1e9s",
    "१s",
];

const SOURCES: &[&str] = &[
    "api",
    "manual",
    "auto-ban",
    "app:x",
    "app:node-1.v2_x",
    "app:",
    "app",
    "feed:x",
    "feed:",
    "adopted",
    "API",
    "app:x y",
    "app:x\n",
    "app:é",
    "",
];

fn control_string(rng: &mut ChaCha8Rng) -> String {
    let bad = pick(
        rng,
        &[
            "\u{0}",
            "\n",
            "\r",
            "\t",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{9b}",
            "\u{1}",
        ],
    );
    format!("spam{bad}here")
}

fn unicode_string(rng: &mut ChaCha8Rng) -> String {
    pick(
        rng,
        &[
            "scanner ✓",
            "攻撃者",
            "🔥🔥🔥",
            "\u{202e}reversed",
            "zero\u{200b}width",
            "e\u{301}",
            "\u{feff}bom",
        ],
    )
    .to_string()
}

fn giant_string(rng: &mut ChaCha8Rng) -> String {
    let n = *pick(rng, &[513, 4096, 70_000, 300_000]);
    "x".repeat(n)
}

fn entry_list(rng: &mut ChaCha8Rng) -> Value {
    match rng.gen_range(0..20) {
        // Many distinct addresses: more than the maps hold (507), or just many.
        0 => {
            let n = *pick(rng, &[70, 200, 2000]);
            json!((0..n)
                .map(|i| format!("198.18.{}.{}", 10 + i / 250, 1 + i % 250))
                .collect::<Vec<_>>())
        }
        1 => json!([]),
        // Duplicates in one request.
        2 | 3 => {
            let e = *pick(rng, GOOD_ENTRIES);
            json!([e, e, *pick(rng, GOOD_ENTRIES), e])
        }
        4 | 5 => json!([*pick(rng, GOOD_ENTRIES), *pick(rng, BAD_ENTRIES)]),
        _ => {
            let n = rng.gen_range(1..=4);
            json!((0..n).map(|_| *pick(rng, GOOD_ENTRIES)).collect::<Vec<_>>())
        }
    }
}

fn add_body(rng: &mut ChaCha8Rng) -> Value {
    let mut b = json!({ "entries": entry_list(rng) });
    if rng.gen_bool(0.5) {
        b["reason"] = match rng.gen_range(0..8) {
            0 => json!(control_string(rng)),
            1 => json!(unicode_string(rng)),
            2 => json!(giant_string(rng)),
            3 => json!("x".repeat(512)),
            _ => json!(format!("reason {}", rng.gen_range(0..100))),
        };
    }
    if rng.gen_bool(0.5) {
        b["ttl"] = json!(*pick(rng, TTLS));
    }
    if rng.gen_bool(0.5) {
        b["source"] = json!(*pick(rng, SOURCES));
    }
    if rng.gen_bool(0.2) {
        b["force"] = json!(rng.gen_bool(0.5));
    }
    b
}

fn remove_body(rng: &mut ChaCha8Rng) -> Value {
    let mut b = json!({ "entries": entry_list(rng) });
    if rng.gen_bool(0.4) {
        b["source"] = json!(*pick(rng, SOURCES));
    }
    b
}

fn import_body(rng: &mut ChaCha8Rng) -> Value {
    let name = match rng.gen_range(0..10) {
        // The name becomes a file name (`<name>.list`): 251 and more is too long for one.
        0..=2 => "n".repeat(*pick(rng, &[250, 251, 300, 5000])),
        3 => pick(rng, &["", "../x", "a b", "a/b", ".", "feed:x", "名前"]).to_string(),
        _ => pick(rng, &["imp1", "imp2", "x-1_y"]).to_string(),
    };
    let text = match rng.gen_range(0..8) {
        0 => String::new(),
        1 => "198.18.0.1/24\n198.18.5.0/24 ; host bits\n".into(),
        2 => "198.18.5.1\nnot-an-address\n".into(),
        3 => (0..100)
            .map(|i| format!("198.18.{}.{}\n", 30 + i / 250, 1 + i % 250))
            .collect(),
        4 => "198.18.200.9\n".into(),
        5 => "# only a comment\n".into(),
        // Addresses no other request uses: whether they reach the maps shows.
        6 | 7 => format!("198.18.6.{}\n", rng.gen_range(1..=254)),
        _ => (0..rng.gen_range(1..5))
            .map(|_| format!("{}\n", pick(rng, GOOD_ENTRIES)))
            .collect(),
    };
    let mut b = json!({ "name": name, "text": text });
    if rng.gen_bool(0.5) {
        b["format"] = json!(*pick(rng, &["plain", "spamhaus", "firehol", "csv", ""]));
    }
    if rng.gen_bool(0.3) {
        b["force"] = json!(rng.gen_bool(0.5));
    }
    b
}

fn base_body(rng: &mut ChaCha8Rng, route: &str) -> Value {
    match route {
        "/v1/block" | "/v1/allow" => add_body(rng),
        "/v1/unblock" | "/v1/unallow" => remove_body(rng),
        "/v1/import" => import_body(rng),
        "/v1/monitor" => json!({ "enabled": rng.gen_bool(0.5) }),
        _ => match rng.gen_range(0..3) {
            0 => add_body(rng),
            1 => json!({ "enabled": true }),
            _ => json!({}),
        },
    }
}

/// Wrong types, unknown and missing fields.
fn mutate(rng: &mut ChaCha8Rng, body: &mut Value) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let keys: Vec<String> = obj.keys().cloned().collect();
    let wrong = || -> Vec<Value> {
        vec![
            json!(null),
            json!(1),
            json!(-1),
            json!(1.5),
            json!(true),
            json!("198.18.0.1"),
            json!([1, 2]),
            json!({"a": 1}),
            json!(18446744073709551615u64),
            json!([[["198.18.0.1"]]]),
        ]
    };
    match rng.gen_range(0..4) {
        0 if !keys.is_empty() => {
            let k = pick(rng, &keys).clone();
            obj.insert(k, pick(rng, &wrong()).clone());
        }
        1 if !keys.is_empty() => {
            let k = pick(rng, &keys).clone();
            obj.remove(&k);
        }
        2 => {
            obj.insert(
                pick(rng, &["extra", "Entries", "ttl ", "__proto__"]).to_string(),
                json!(1),
            );
        }
        _ => {
            obj.insert("entries".into(), json!([pick(rng, &wrong()).clone()]));
        }
    }
}

/// A body's bytes: JSON (mostly), or broken JSON, or not JSON at all.
fn body_bytes(rng: &mut ChaCha8Rng, value: &Value) -> Vec<u8> {
    let text = value.to_string().into_bytes();
    match rng.gen_range(0..40) {
        0 => text[..rng.gen_range(0..=text.len())].to_vec(),
        1 => vec![0xff, 0xfe, b'{', 0xc0, 0xae, b'}'],
        2 => Vec::new(),
        3 => b"null".to_vec(),
        4 => b"[]".to_vec(),
        5 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        6 => {
            // Just over the body limit (413).
            let mut v = br#"{"entries": [""#.to_vec();
            v.extend(vec![b'a'; MAX_BODY + 10]);
            v.extend_from_slice(br#""]}"#);
            v
        }
        7 => {
            let mut t = text;
            t.extend_from_slice(b"garbage");
            t
        }
        8 => (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect(),
        _ => text,
    }
}

fn junk_segment(rng: &mut ChaCha8Rng) -> String {
    pick(
        rng,
        &[
            "%C0%AE",
            "%00",
            "%FF%FE",
            "..%2F..%2Fetc",
            "198.18.0.1%2F24",
            "%E2%9C%93",
            "198.18.0.1",
            "2001:2::1",
            "::",
            "0",
            "%20198.18.0.1",
            "198.18.0.1.",
            "a%",
            "%zz",
            "ü",
        ],
    )
    .to_string()
}

fn random_path(rng: &mut ChaCha8Rng, real: &str) -> String {
    match rng.gen_range(0..30) {
        0 => format!("{real}/"),
        1 => real.to_uppercase(),
        2 => format!("/{real}"),
        3 => format!("/v1/why/{}", junk_segment(rng)),
        4 => format!("/v1/why/{}", junk_segment(rng)),
        5 => format!("/v1/{}", "a".repeat(*pick(rng, &[300, 10_000, 60_000]))),
        6 => format!("/v1/feeds/{}/refresh", junk_segment(rng)),
        7 => format!("{real}?{}", junk_segment(rng)),
        8..=12 => format!(
            "/v1/entries?{}",
            pick(
                rng,
                &[
                    "limit=0",
                    "limit=1",
                    "limit=2",
                    "limit=-1",
                    "limit=99999999999999999999999",
                    "limit=abc",
                    "list=block",
                    "list=allow&limit=0",
                    "list=bogus",
                    "source=feed",
                    "source=app%3Ax",
                    "source=%00",
                    "unknown=1",
                    "limit=1&limit=2",
                ]
            )
        ),
        13 => format!(
            "/v1/journey/recent?{}",
            pick(
                rng,
                &["limit=0", "limit=-5", "outcome=junk", "limit=99999999999"]
            )
        ),
        14 => "*".to_string(),
        15 => "/".to_string(),
        _ => real.to_string(),
    }
}

fn content_type(rng: &mut ChaCha8Rng) -> Option<&'static str> {
    match rng.gen_range(0..20) {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/x-www-form-urlencoded"),
        3 => Some("application/json; charset=utf-8"),
        4 => Some("APPLICATION/JSON"),
        5 => Some("application/jsonx"),
        6 => Some(""),
        _ => Some("application/json"),
    }
}

fn random_request(rng: &mut ChaCha8Rng) -> Request {
    let (real_method, real_path) = *pick(rng, ENDPOINTS);
    let method = if rng.gen_bool(0.85) {
        real_method.to_string()
    } else {
        pick(
            rng,
            &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"],
        )
        .to_string()
    };
    let mut path = random_path(rng, real_path);
    let route = path.split('?').next().unwrap_or("").to_string();
    // Never switch journey tracing on (it hooks the whole kernel), and never open the
    // never-ending event stream.
    let method = match (method.as_str(), route.as_str()) {
        ("PUT", "/v1/journey") => "PATCH".to_string(),
        ("GET", "/v1/journey/events") => "POST".to_string(),
        _ => method,
    };
    if route == "/v1/journey/events" && method == "GET" {
        path = "/v1/journey".into();
    }
    let mut value = base_body(rng, &route);
    for _ in 0..rng.gen_range(0..=2) {
        if rng.gen_bool(0.3) {
            mutate(rng, &mut value);
        }
    }
    let body = if method == "GET" && rng.gen_bool(0.8) {
        Vec::new()
    } else {
        body_bytes(rng, &value)
    };
    let mut headers = vec![("Host".to_string(), "gz".to_string())];
    if let Some(ct) = content_type(rng) {
        headers.push(("Content-Type".into(), ct.into()));
    }
    let (mut bad_framing, mut short_body) = (false, false);
    match rng.gen_range(0..60) {
        0 => {
            headers.push(("Content-Length".into(), (body.len() + 10).to_string()));
            bad_framing = true;
            short_body = true;
        }
        1 => {
            headers.push(("Content-Length".into(), "abc".into()));
            bad_framing = true;
        }
        2 => {
            headers.push(("Content-Length".into(), body.len().to_string()));
            headers.push(("Content-Length".into(), (body.len() + 1).to_string()));
            bad_framing = true;
        }
        3 => {
            headers.push(("Content-Length".into(), "-1".into()));
            bad_framing = true;
        }
        4 if !body.is_empty() => {
            // Shorter than the body: the rest looks like a second (junk) request.
            headers.push(("Content-Length".into(), (body.len() / 2).to_string()));
        }
        5 => {
            // Chunked, correctly framed.
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            let mut chunked = Vec::new();
            for part in body.chunks(1000) {
                chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                chunked.extend_from_slice(part);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            headers.push(("Connection".into(), "close".into()));
            return Request {
                method,
                path,
                headers,
                body: chunked,
                bad_framing,
                short_body,
            };
        }
        _ => headers.push(("Content-Length".into(), body.len().to_string())),
    }
    match rng.gen_range(0..30) {
        0 => headers.push(("Authorization".into(), "Bearer nonsense".into())),
        1 => headers.push(("X-Junk".into(), "j".repeat(8000))),
        2 => headers.push(("Expect".into(), "100-continue".into())),
        3 => headers.push(("Accept".into(), "text/html".into())),
        _ => {}
    }
    headers.push(("Connection".into(), "close".into()));
    Request {
        method,
        path,
        headers,
        body,
        bad_framing,
        short_body,
    }
}

/// What the daemon holds, read three ways at one moment.
#[derive(Clone, Debug)]
struct Snapshot {
    api: View,
    kernel: BTreeSet<Key>,
    monitor: bool,
    journal_len: u64,
}

fn snapshot(d: &TestDaemon, kernel: &Kernel) -> Snapshot {
    Snapshot {
        api: state::api_view(&d.socket).unwrap_or_else(|e| panic!("reading the API: {e}")),
        kernel: kernel.keys(),
        monitor: kernel.monitor(),
        journal_len: state::journal_bytes(&d.dir.join("state")),
    }
}

/// A snapshot whose API view matches its kernel maps, if one comes within ~1 s (an expiry
/// may run between the two reads).
fn agreeing_snapshot(d: &TestDaemon, kernel: &Kernel) -> (Snapshot, bool) {
    let mut s = snapshot(d, kernel);
    for _ in 0..8 {
        if s.kernel == state::keys(&s.api) {
            return (s, true);
        }
        std::thread::sleep(Duration::from_millis(150));
        s = snapshot(d, kernel);
    }
    (s, false)
}

/// `view` without the holds due by `t` (the expiry loop may remove them at any moment).
fn without_due(view: &View, t: u64) -> View {
    let mut out = View::new();
    for (k, hs) in view {
        let kept: BTreeMap<_, _> = hs
            .iter()
            .filter(|(_, h)| h.expires.is_none_or(|e| e > t))
            .map(|(s, h)| (s.clone(), h.clone()))
            .collect();
        if !kept.is_empty() {
            out.insert(k.clone(), kept);
        }
    }
    out
}

/// Failures, grouped by kind: the first example of each and how often it happened.
#[derive(Default)]
struct Findings {
    kinds: BTreeMap<String, (usize, String)>,
}

impl Findings {
    fn add(&mut self, kind: impl Into<String>, i: usize, req: &Request, detail: String) {
        let entry = self.kinds.entry(kind.into()).or_insert_with(|| {
            (
                0,
                format!("request #{i}: {}\n      -> {detail}", req.describe()),
            )
        });
        entry.0 += 1;
    }
}

/// Removes every entry the API lists (and import sets by re-importing them empty), to keep
/// snapshots small. Entries in the kernel that the API does not know are removed from the maps
/// directly: a failure already recorded, and leaving them would repeat it on every request.
fn clear(d: &TestDaemon, kernel: &mut Kernel, snap: &Snapshot) {
    let mut feeds = BTreeSet::new();
    for ((list, net), hs) in &snap.api {
        let path = if list == "block" {
            "/v1/unblock"
        } else {
            "/v1/unallow"
        };
        let body = json!({ "entries": [net.to_string()] });
        let _ = state::request(&d.socket, "POST", path, Some(&body));
        feeds.extend(
            hs.keys()
                .filter_map(|s| s.strip_prefix("feed:"))
                .map(str::to_string),
        );
    }
    for name in feeds {
        let body = json!({ "name": name, "text": "" });
        let _ = state::request(&d.socket, "POST", "/v1/import", Some(&body));
    }
    let api = state::api_view(&d.socket).unwrap_or_default();
    for key in kernel.keys() {
        if !api.contains_key(&key) {
            kernel.remove(&key);
        }
    }
}

/// The entries of an add request that would be new (not yet on `list`), or None if the body
/// is not a plain valid list.
/// New distinct entries of the request that the guard did not refuse (the answer lists each
/// entry's outcome: refused ones are not applied, the rest are).
fn expected_added(body: &Value, answer: &Value, list: &str, before: &View) -> Option<usize> {
    let mut nets = BTreeSet::new();
    for e in body.get("entries")?.as_array()? {
        nets.insert(groundzero::parse_entry(e.as_str()?).ok()?);
    }
    let refused: BTreeSet<groundzero::IpNet> = answer["results"]
        .as_array()?
        .iter()
        .filter(|r| r["status"] == "refused")
        .filter_map(|r| r["entry"].as_str()?.parse().ok())
        .collect();
    Some(
        nets.iter()
            .filter(|n| !refused.contains(n) && !before.contains_key(&(list.to_string(), **n)))
            .count(),
    )
}

fn is_error_json(r: &Response) -> bool {
    r.json().is_some_and(|v| {
        v.get("error")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    }) && r
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Checks the promises of docs/api.md about a successful answer.
fn check_success(
    findings: &mut Findings,
    i: usize,
    req: &Request,
    r: &Response,
    before: &Snapshot,
    t_before: u64,
    t_after: u64,
) {
    let route = req.route();
    let answer = r.json().unwrap_or_default();
    if req.method == "POST" && (route == "/v1/block" || route == "/v1/allow") {
        let Some(body) = req.body_json() else { return };
        let list = &route[4..];
        if let Some(ttl) = body.get("ttl").and_then(Value::as_str) {
            match humantime::parse_duration(ttl) {
                Ok(d) => {
                    let expires = answer["expires"].as_u64().map(u128::from);
                    let lo = u128::from(t_before) + d.as_secs() as u128;
                    let hi = u128::from(t_after) + d.as_secs() as u128;
                    if expires.is_none_or(|e| e < lo || e > hi) {
                        findings.add(
                            format!("200 with a wrong expiry for ttl {ttl:?}"),
                            i,
                            req,
                            format!(
                                "expires {:?}, wanted {lo}..={hi} (u64 max {})",
                                answer["expires"],
                                u64::MAX
                            ),
                        );
                    }
                }
                Err(e) => findings.add(
                    "200 for a TTL humantime refuses",
                    i,
                    req,
                    format!("{ttl:?}: {e}; answer {answer}"),
                ),
            }
        }
        if let Some(reason) = body.get("reason").and_then(Value::as_str) {
            if reason.chars().any(char::is_control) {
                findings.add(
                    "200 for a reason with control characters",
                    i,
                    req,
                    answer.to_string(),
                );
            }
        }
        if let Some(want) = expected_added(&body, &answer, list, &before.api) {
            if answer["added"].as_u64() != Some(want as u64) {
                findings.add(
                    "`added` is not the number of new distinct entries",
                    i,
                    req,
                    format!("added {}, wanted {want}", answer["added"]),
                );
            }
        }
    }
    if req.method == "GET" && route == "/v1/entries" {
        let limit = req
            .path
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("limit="))
            .next_back()
            .and_then(|v| v.parse::<usize>().ok());
        let got = answer["entries"].as_array().map_or(0, Vec::len);
        if let Some(limit) = limit {
            if got > limit {
                findings.add(
                    format!("limit={limit} answers more entries"),
                    i,
                    req,
                    format!("{got} entries"),
                );
            }
        }
    }
}

fn seed() -> u64 {
    let seed = std::env::var("GZ_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(state::now_unix);
    eprintln!("api_fuzz seed: {seed} (GZ_FUZZ_SEED={seed} replays it)");
    seed
}

#[test]
fn management_api_survives_random_requests_and_changes_nothing_on_error() {
    let requests: usize = std::env::var("GZ_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    count_panics();
    let d = TestDaemon::start(CONFIG);
    let mut kernel = Kernel::open(&d.pin_dir);
    let mut findings = Findings::default();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let started = Instant::now();
    let mut sent = 0;
    for i in 0..requests {
        if started.elapsed() > Duration::from_secs(90) {
            eprintln!("stopping after {i} requests: the time bound (90 s) is reached");
            break;
        }
        let req = random_request(&mut rng);
        let (before, agree) = agreeing_snapshot(&d, &kernel);
        if !agree {
            // Already recorded after the request that caused it; start clean.
            clear(&d, &mut kernel, &before);
            continue;
        }
        let panics_before = PANICS.load(Ordering::SeqCst);
        let t_before = state::now_unix();
        let answer = state::exchange(
            &d.socket,
            &req.wire(),
            Duration::from_secs(10),
            req.short_body,
        );
        let t_after = state::now_unix();
        sent += 1;
        let panics = PANICS.load(Ordering::SeqCst) - panics_before;
        if panics > 0 {
            let last = PANIC_MESSAGES
                .lock()
                .map(|m| m.last().cloned())
                .ok()
                .flatten();
            findings.add("the daemon panicked", i, &req, last.unwrap_or_default());
        }
        let (after, agree) = agreeing_snapshot(&d, &kernel);
        let status = answer.as_ref().map_or(0, |r| r.status);
        *statuses.entry(status).or_default() += 1;
        if !agree {
            findings.add(
                format!("kernel maps and /v1/entries disagree after a {status}"),
                i,
                &req,
                format!(
                    "only in the kernel {:?}; only in the API {:?}",
                    after
                        .kernel
                        .difference(&state::keys(&after.api))
                        .collect::<Vec<_>>(),
                    state::keys(&after.api)
                        .difference(&after.kernel)
                        .collect::<Vec<_>>()
                ),
            );
        }
        let success = (200..300).contains(&status);
        match &answer {
            None if req.short_body => {}
            None => findings.add("no answer (connection dropped)", i, &req, String::new()),
            Some(r) if r.status >= 500 && r.status != 503 && r.status != 507 => findings.add(
                format!("{} answer", r.status),
                i,
                &req,
                r.text().chars().take(300).collect(),
            ),
            // A request whose framing is broken may be refused by the HTTP layer itself.
            Some(r) if !(success || is_error_json(r) || req.bad_framing && r.status == 400) => {
                findings.add(
                    format!("{} error is not JSON {{\"error\": ...}}", r.status),
                    i,
                    &req,
                    format!(
                        "content-type {:?}, body {:?}",
                        r.header("content-type"),
                        r.text().chars().take(200).collect::<String>()
                    ),
                )
            }
            Some(r) if success => {
                check_success(&mut findings, i, &req, r, &before, t_before, t_after)
            }
            Some(_) => {}
        }
        if !success {
            // Nothing changed, apart from holds the expiry loop may have removed meanwhile.
            let due = t_after + 1;
            let may_go: BTreeSet<Key> = state::keys(&before.api)
                .difference(&state::keys(&without_due(&before.api, due)))
                .cloned()
                .collect();
            let expiring = !may_go.is_empty()
                || before
                    .api
                    .values()
                    .flatten()
                    .any(|(_, h)| h.expires.is_some_and(|e| e <= due));
            let api_changed = without_due(&before.api, due) != without_due(&after.api, due);
            let kernel_changed = before.kernel.difference(&may_go).collect::<Vec<_>>()
                != after.kernel.difference(&may_go).collect::<Vec<_>>();
            if api_changed || kernel_changed || before.monitor != after.monitor {
                findings.add(
                    format!("state changed on a {status}"),
                    i,
                    &req,
                    format!(
                        "API changed {api_changed}, kernel changed {kernel_changed} \
                         (kernel now only {:?}), monitor {} -> {}",
                        after.kernel.difference(&before.kernel).collect::<Vec<_>>(),
                        before.monitor,
                        after.monitor
                    ),
                );
            }
            if !expiring && after.journal_len != before.journal_len {
                findings.add(
                    format!("journal grew on a {status}"),
                    i,
                    &req,
                    format!("{} -> {} bytes", before.journal_len, after.journal_len),
                );
            }
        }
        if after.api.len() > CAP || !agree {
            clear(&d, &mut kernel, &after);
        }
    }
    eprintln!(
        "api_fuzz: {sent} requests in {:.1} s; statuses {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        findings.kinds.is_empty(),
        "seed {seed} (GZ_FUZZ_SEED={seed} replays it): {} kind(s) of failure:\n{}",
        findings.kinds.len(),
        findings
            .kinds
            .iter()
            .map(|(kind, (n, example))| format!("- {kind} (x{n})\n    {example}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
