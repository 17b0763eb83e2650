//! What the daemon holds, read three independent ways: the API's `/v1/entries`, the pinned
//! kernel maps, and a replay of the journal file. Plus a blocking raw HTTP/1.1 exchange over the
//! API socket that returns whatever came back (or nothing), for tests that must see bad answers
//! and dropped connections as they are.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use groundzero::{IpNet, Shield, ShieldOptions};
use serde_json::Value;

/// One holder of an entry, as the API shows it (and the journal records it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub reason: Option<String>,
    pub expires: Option<u64>,
    pub created: u64,
}

/// `("block" | "allow", entry)`.
pub type Key = (String, IpNet);
/// Every entry with its holders by source.
pub type View = BTreeMap<Key, BTreeMap<String, Hold>>;

/// The entries of a view, without holders (what the kernel maps can be compared with).
pub fn keys(view: &View) -> BTreeSet<Key> {
    view.keys().cloned().collect()
}

/// The view without `created` (which a restart or a replacement may legitimately change).
pub fn without_created(view: &View) -> View {
    view.iter()
        .map(|(k, hs)| {
            let hs = hs
                .iter()
                .map(|(s, h)| {
                    (
                        s.clone(),
                        Hold {
                            created: 0,
                            ..h.clone()
                        },
                    )
                })
                .collect();
            (k.clone(), hs)
        })
        .collect()
}

/// An HTTP answer as it came off the socket.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` (raw bytes) to the socket and reads until the server closes. `half_close`
/// shuts our write side after sending (for requests whose Content-Length promises more than
/// they carry). None: no status line came back (connection refused, reset, or closed silently).
pub fn exchange(
    socket: &Path,
    request: &[u8],
    timeout: Duration,
    half_close: bool,
) -> Option<Response> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    // The server may answer (413) and close before it has read everything: not our error.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

/// A well-formed JSON request with `Connection: close`.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Option<Response> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: gz\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(socket, raw.as_bytes(), Duration::from_secs(20), false)
}

fn parse_response(mut raw: &[u8]) -> Option<Response> {
    // Interim answers (`100 Continue` to `Expect: 100-continue`) come before the real one.
    while raw.starts_with(b"HTTP/1.1 1") || raw.starts_with(b"HTTP/1.0 1") {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        raw = &raw[end + 4..];
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(rest.len());
        rest[..len.min(rest.len())].to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || size > rest.len() {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Parses one entry view (`/v1/entries` element) into the view.
fn add_entry_json(view: &mut View, e: &Value) -> Result<(), String> {
    let list = e["list"].as_str().ok_or(format!("no list in {e}"))?;
    let net: IpNet = e["entry"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad entry in {e}"))?;
    let holders = view.entry((list.to_string(), net)).or_default();
    for h in e["holders"]
        .as_array()
        .ok_or(format!("no holders in {e}"))?
    {
        let source = h["source"].as_str().ok_or(format!("no source in {h}"))?;
        holders.insert(
            source.to_string(),
            Hold {
                reason: h["reason"].as_str().map(str::to_string),
                expires: h["expires"].as_u64(),
                created: h["created"].as_u64().unwrap_or(0),
            },
        );
    }
    Ok(())
}

/// Everything `/v1/entries` lists (both lists, no limit that could bite).
pub fn api_view(socket: &Path) -> Result<View, String> {
    let r = request(socket, "GET", "/v1/entries?limit=1000000", None)
        .ok_or("GET /v1/entries: no answer")?;
    if r.status != 200 {
        return Err(format!("GET /v1/entries: {} {}", r.status, r.text()));
    }
    let v = r.json().ok_or("GET /v1/entries: not JSON")?;
    let mut view = View::new();
    for e in v["entries"].as_array().ok_or("no `entries` array")? {
        add_entry_json(&mut view, e)?;
    }
    Ok(view)
}

/// The pinned maps under `pin_dir`, opened as the daemon left them (a second handle on the same
/// kernel objects: the maps are read, never written).
pub struct Kernel {
    shield: Shield,
}

impl Kernel {
    /// Only while the maps exist (a daemon has pinned them): opening creates missing ones.
    pub fn open(pin_dir: &Path) -> Self {
        let shield = Shield::load(ShieldOptions {
            pin_dir: Some(pin_dir.to_path_buf()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("opening the pinned maps in {}: {e:?}", pin_dir.display()));
        Self { shield }
    }

    pub fn keys(&self) -> BTreeSet<Key> {
        let blocked = self.shield.blocked().expect("reading the blocklist maps");
        let allowed = self.shield.allowed().expect("reading the allowlist map");
        blocked
            .into_iter()
            .map(|e| ("block".to_string(), e.net))
            .chain(allowed.into_iter().map(|e| ("allow".to_string(), e.net)))
            .collect()
    }

    /// Removes `key` from the maps behind the daemon's back: only to repair a state a test
    /// has already reported (an entry the daemon left in a map without a record).
    pub fn remove(&mut self, key: &Key) {
        let _ = if key.0 == "block" {
            self.shield.unblock(key.1)
        } else {
            self.shield.unallow(key.1)
        };
    }

    pub fn monitor(&self) -> bool {
        self.shield.monitor().expect("reading the config map")
    }
}

/// The state the journal in `state_dir` describes: its intact records replayed in order (an add
/// replaces the same source's hold; a remove drops one source's hold, or every non-feed hold).
/// A torn last frame (a kill mid-append) is skipped, as the daemon's recovery skips it; the
/// records are read with the daemon's own frame reader, without changing anything.
pub fn journal_view(state_dir: &Path) -> Result<View, String> {
    use groundzero_daemon::journal::{read_only, Record};
    let (records, _damaged) = read_only(state_dir).map_err(|e| e.to_string())?;
    let mut view = View::new();
    for record in records {
        match record {
            Record::Add { side, net, holder } => {
                let key = (side_name(side), net);
                view.entry(key).or_default().insert(
                    holder.source.clone(),
                    Hold {
                        reason: holder.reason.clone(),
                        expires: holder.expires,
                        created: holder.created,
                    },
                );
            }
            Record::Remove { side, net, source } => {
                let key = (side_name(side), net);
                if let Some(holders) = view.get_mut(&key) {
                    match source {
                        Some(s) => {
                            holders.remove(&s);
                        }
                        None => holders.retain(|s, _| s.starts_with("feed:")),
                    }
                    if holders.is_empty() {
                        view.remove(&key);
                    }
                }
            }
        }
    }
    Ok(view)
}

fn side_name(side: groundzero_daemon::registry::Side) -> String {
    match side {
        groundzero_daemon::registry::Side::Block => "block".into(),
        groundzero_daemon::registry::Side::Allow => "allow".into(),
    }
}

/// The journal's size in bytes (both the framed and a legacy file).
pub fn journal_bytes(state_dir: &Path) -> u64 {
    ["journal.gzj", "journal.jsonl"]
        .iter()
        .filter_map(|f| std::fs::metadata(state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
