//! groundzero as a CrowdSec watcher (`[crowdsec.push]`): the bans this host makes itself go to
//! the Local API as alerts with one decision each, so every other host's bouncer pulls them.
//!
//! - **What.** Only bans that *enter* the registry (a source from `sources` starting to hold a
//!   block entry, hooked where `Registry::add` succeeds): not per packet, not a re-ban that only
//!   extends a hold that is already there. A `crowdsec:*` holder is never pushed back, whatever
//!   `sources` says.
//! - **Shape.** One alert per ban, scenario `groundzero/<source>` (`groundzero/auto-ban`,
//!   `groundzero/app:validator`), the holder's reason as message, and one decision: type `ban`,
//!   scope `Ip` or `Range` (a 1.4.6 LAPI is case-sensitive: a decision of scope `ip` is stored
//!   but never reaches a bouncer), origin `groundzero`, the remaining time as a Go duration
//!   (`"3600s"`). A permanent entry gets [`PERMANENT`] (`8760h`, a year): CrowdSec has no
//!   permanent decision, and a year outlives any sane ban while still expiring some day.
//! - **Removal.** Unblocking here pushes nothing yet: the decision expires on its own on the
//!   LAPI. A machine's token may `DELETE /v1/decisions` (a filter by value deletes every
//!   origin's decision on that value, so a withdrawal must be narrowed to groundzero's own,
//!   e.g. by decision id): not built yet; meanwhile `cscli decisions delete` withdraws one.
//! - **Bounded.** Bans wait in an [`Outbox`] of at most `queue` bans: when the LAPI is down the
//!   oldest are dropped (and counted), so an outage never grows memory without limit. Offering
//!   a ban is a push onto a queue under the lock the registry already holds: a LAPI that is down
//!   or slow never delays a ban.
//! - **Batching.** The task ([`crate::tasks::crowdsec_push`]) sends everything queued once per
//!   `interval` in one `POST /v1/alerts` (up to [`MAX_BATCH`] alerts), logging in first
//!   (`POST /v1/watchers/login` → JWT) and again on a 401 or when the token is old.
//! - **Lost on restart.** The queue lives in memory: bans queued when the daemon stops are not
//!   pushed by the next one.

use std::{collections::VecDeque, io::Read as _, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::Serialize;

use groundzero_api::{crowdsec::CrowdsecPushReply, Source, SourceKind};

use crate::{config::ValidPush, records::Holder};

/// The source kinds `[crowdsec.push].sources` may name.
pub const PUSHABLE: [&str; 4] = ["auto-ban", "app", "api", "manual"];
/// The duration pushed for an entry with no expiry (CrowdSec has no permanent decision).
pub const PERMANENT: &str = "8760h";
/// The most alerts in one `POST /v1/alerts`.
pub const MAX_BATCH: usize = 500;
/// Decisions pushed carry this origin (`crowdsec:groundzero` on the hosts that pull them).
pub const ORIGIN: &str = "groundzero";
/// Sent as `User-Agent`.
pub const USER_AGENT: &str = concat!("crowdsec-groundzero-watcher/", env!("CARGO_PKG_VERSION"));
/// A token older than this is renewed before use (a 1.4.6 LAPI's JWTs last an hour).
const TOKEN_AGE: Duration = Duration::from_secs(30 * 60);

/// One ban waiting to be pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct Ban {
    pub net: IpNet,
    pub source: String,
    pub reason: Option<String>,
    /// Unix seconds; None: permanent.
    pub expires: Option<u64>,
}

/// The bans waiting to be pushed, and the watcher's state. The registry holds it and offers
/// each ban that enters; the push task drains it.
#[derive(Debug)]
pub struct Outbox {
    bans: VecDeque<Ban>,
    capacity: usize,
    sources: Vec<String>,
    /// What `GET /v1/crowdsec` shows as `push` (queued and dropped filled in on read).
    pub status: CrowdsecPushReply,
}

impl Outbox {
    /// An empty outbox for `config`.
    pub fn new(config: &ValidPush) -> Self {
        Outbox {
            bans: VecDeque::new(),
            capacity: config.queue,
            sources: config.sources.clone(),
            status: CrowdsecPushReply {
                lapi_url: config.lapi_url.clone(),
                machine_id: config.machine_id.clone(),
                sources: config.sources.clone(),
                queue_capacity: config.queue as u64,
                ..CrowdsecPushReply::default()
            },
        }
    }

    /// A new config (SIGHUP): queued bans stay (the oldest dropped if the queue shrank);
    /// counters carry on.
    pub fn reconfigure(&mut self, config: &ValidPush) {
        self.capacity = config.queue;
        self.sources = config.sources.clone();
        self.status.lapi_url = config.lapi_url.clone();
        self.status.machine_id = config.machine_id.clone();
        self.status.sources = config.sources.clone();
        self.status.queue_capacity = config.queue as u64;
        self.trim();
    }

    /// Whether bans held by `source` are pushed: its kind is in `sources`, and it never came
    /// from CrowdSec.
    pub fn wants(&self, source: &str) -> bool {
        let kind = Source::parse(source).kind();
        kind != SourceKind::Crowdsec && self.sources.iter().any(|s| s == kind.label())
    }

    /// Queues `nets`, just held by `holder`, if its source is pushed.
    pub fn offer(&mut self, nets: &[IpNet], holder: &Holder) {
        if nets.is_empty() || !self.wants(&holder.source) {
            return;
        }
        for net in nets {
            self.bans.push_back(Ban {
                net: *net,
                source: holder.source.clone(),
                reason: holder.reason.clone(),
                expires: holder.expires,
            });
        }
        self.trim();
    }

    /// Takes up to `max` bans, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<Ban> {
        let n = max.min(self.bans.len());
        self.bans.drain(..n).collect()
    }

    /// Puts back bans a failed push took (ahead of newer ones), dropping the oldest beyond
    /// the bound.
    pub fn put_back(&mut self, bans: Vec<Ban>) {
        for ban in bans.into_iter().rev() {
            self.bans.push_front(ban);
        }
        self.trim();
    }

    /// Bans waiting.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// The state as the API shows it.
    pub fn reply(&self) -> CrowdsecPushReply {
        CrowdsecPushReply {
            queued: self.bans.len() as u64,
            ..self.status.clone()
        }
    }

    fn trim(&mut self) {
        while self.bans.len() > self.capacity {
            self.bans.pop_front();
            self.status.dropped += 1;
        }
    }
}

/// Why a push failed (the bans stay queued).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("reading crowdsec.push.password_file {path}: {source}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("crowdsec.push.password_file {path} is empty")]
    EmptyPassword { path: PathBuf },
    #[error("POST {url}: {message}")]
    Http { url: String, message: String },
    #[error("POST {url}: HTTP {status}{hint}: {body}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("POST {url}: no token in the reply: {body}")]
    NoToken { url: String, body: String },
}

impl PushError {
    /// A 401: the token expired or was revoked (log in again).
    fn unauthorized(&self) -> bool {
        matches!(self, PushError::Status { status: 401, .. })
    }
}

/// A JWT from `POST /v1/watchers/login`.
#[derive(Clone, Debug)]
pub struct Session {
    token: String,
    at: std::time::Instant,
}

/// `POST /v1/alerts` body items (swagger `models.Alert`, every required field).
#[derive(Serialize)]
struct Alert<'a> {
    scenario: &'a str,
    scenario_hash: &'a str,
    scenario_version: &'a str,
    message: &'a str,
    events_count: u32,
    events: [(); 0],
    start_at: &'a str,
    stop_at: &'a str,
    capacity: u32,
    leakspeed: &'a str,
    simulated: bool,
    source: AlertSource<'a>,
    decisions: [Decision<'a>; 1],
}

#[derive(Serialize)]
struct AlertSource<'a> {
    scope: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<&'a str>,
}

#[derive(Serialize)]
struct Decision<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    scope: &'a str,
    value: &'a str,
    duration: &'a str,
    origin: &'a str,
    scenario: &'a str,
}

/// `Ip` for a single address, `Range` for a prefix (case matters to the LAPI).
pub fn scope(net: &IpNet) -> &'static str {
    if net.prefix_len() == net.max_prefix_len() {
        "Ip"
    } else {
        "Range"
    }
}

/// The value pushed: the bare address for `Ip`, the prefix for `Range`.
pub fn value(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The remaining time as a Go duration (`"3600s"`); [`PERMANENT`] for no expiry; None when it
/// has already expired (nothing to push).
pub fn go_duration(expires: Option<u64>, now: u64) -> Option<String> {
    match expires {
        None => Some(PERMANENT.to_string()),
        Some(t) if t > now => Some(format!("{}s", t - now)),
        Some(_) => None,
    }
}

/// The `POST /v1/alerts` body for `bans` at `now` (expired bans left out) and how many alerts
/// it holds.
pub fn alerts_body(bans: &[Ban], now: u64) -> (String, usize) {
    let stamp = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(now))
        .to_string();
    // The owned strings first: the alerts borrow them.
    let prepared: Vec<(&Ban, String, String, String)> = bans
        .iter()
        .filter_map(|b| {
            let duration = go_duration(b.expires, now)?;
            Some((
                b,
                format!("groundzero/{}", b.source),
                value(&b.net),
                duration,
            ))
        })
        .collect();
    let alerts: Vec<Alert> = prepared
        .iter()
        .map(|(b, scenario, value, duration)| {
            let scope = scope(&b.net);
            Alert {
                scenario,
                scenario_hash: "",
                scenario_version: "",
                message: b.reason.as_deref().unwrap_or("banned by groundzero"),
                events_count: 1,
                events: [],
                start_at: &stamp,
                stop_at: &stamp,
                capacity: 0,
                leakspeed: "0",
                simulated: false,
                source: AlertSource {
                    scope,
                    value,
                    ip: (scope == "Ip").then_some(value.as_str()),
                    range: (scope == "Range").then_some(value.as_str()),
                },
                decisions: [Decision {
                    kind: "ban",
                    scope,
                    value,
                    duration,
                    origin: ORIGIN,
                    scenario,
                }],
            }
        })
        .collect();
    let n = alerts.len();
    (
        serde_json::to_string(&alerts).unwrap_or_else(|_| "[]".into()),
        n,
    )
}

/// One POST with a JSON body; the reply's body on a 2xx.
fn post(
    config: &ValidPush,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<String, PushError> {
    let url = format!("{}{path}", config.lapi_url);
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let mut request = agent
        .post(&url)
        .set("User-Agent", USER_AGENT)
        .set("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.send_string(body) {
        Ok(r) => {
            let mut text = String::new();
            r.into_reader()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| PushError::Http {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            Ok(text)
        }
        Err(ureq::Error::Status(status, r)) => Err(PushError::Status {
            url,
            status,
            hint: match status {
                401 | 403 => " (the LAPI refused the machine's credentials)",
                500 => " (a 1.4.6 LAPI answers a validation error with 500)",
                _ => "",
            },
            body: crate::lapi_http::error_body(r),
        }),
        Err(e) => {
            let message = crate::lapi_http::transport_message(&url, &e);
            Err(PushError::Http { url, message })
        }
    }
}

/// `POST /v1/watchers/login`: a new token.
pub fn login(config: &ValidPush) -> Result<Session, PushError> {
    let password = std::fs::read_to_string(&config.password_file)
        .map_err(|source| PushError::Password {
            path: config.password_file.clone(),
            source,
        })?
        .trim()
        .to_string();
    if password.is_empty() {
        return Err(PushError::EmptyPassword {
            path: config.password_file.clone(),
        });
    }
    let scenarios: Vec<String> = config
        .sources
        .iter()
        .map(|s| format!("groundzero/{s}"))
        .collect();
    let body = serde_json::json!({
        "machine_id": config.machine_id,
        "password": password,
        "scenarios": scenarios,
    })
    .to_string();
    let text = post(config, "/v1/watchers/login", None, &body)?;
    let token = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("token")?.as_str().map(str::to_string))
        .filter(|t| !t.is_empty());
    match token {
        Some(token) => Ok(Session {
            token,
            at: std::time::Instant::now(),
        }),
        None => Err(PushError::NoToken {
            url: format!("{}/v1/watchers/login", config.lapi_url),
            body: groundzero::text::for_terminal(&text.chars().take(200).collect::<String>())
                .into_owned(),
        }),
    }
}

/// What one push did.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Alerts the LAPI accepted.
    pub alerts: usize,
    /// Logins it took.
    pub logins: usize,
}

/// Pushes `bans` in one `POST /v1/alerts`, logging in first if `session` is None or old, and
/// once more on a 401. Blocking: call from a blocking thread. On failure the session is
/// dropped when the LAPI refused it.
pub fn push(
    config: &ValidPush,
    session: &mut Option<Session>,
    bans: &[Ban],
    now: u64,
) -> Result<Pushed, PushError> {
    let (body, alerts) = alerts_body(bans, now);
    let mut pushed = Pushed::default();
    if alerts == 0 {
        return Ok(pushed);
    }
    for attempt in 0..2 {
        let token = match session {
            Some(s) if s.at.elapsed() < TOKEN_AGE => s.token.clone(),
            _ => {
                let s = login(config)?;
                pushed.logins += 1;
                let token = s.token.clone();
                *session = Some(s);
                token
            }
        };
        match post(config, "/v1/alerts", Some(&token), &body) {
            Ok(_) => {
                pushed.alerts = alerts;
                return Ok(pushed);
            }
            Err(e) if e.unauthorized() && attempt == 0 => *session = None,
            Err(e) => {
                if e.unauthorized() {
                    *session = None;
                }
                return Err(e);
            }
        }
    }
    unreachable!("the second attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queue: usize) -> ValidPush {
        ValidPush {
            lapi_url: "http://127.0.0.1:1".into(),
            machine_id: "node-a".into(),
            password_file: "/nonexistent".into(),
            sources: vec!["auto-ban".into(), "app".into()],
            interval: Duration::from_secs(2),
            queue,
            timeout: Duration::from_secs(1),
        }
    }

    fn holder(source: &str, expires: Option<u64>) -> Holder {
        Holder {
            source: source.into(),
            reason: Some("why".into()),
            created: 1,
            expires,
        }
    }

    #[test]
    fn only_chosen_sources_are_queued_and_never_crowdsec() {
        let mut o = Outbox::new(&config(10));
        let net: IpNet = "198.18.0.1/32".parse().unwrap();
        for source in [
            "crowdsec:groundzero",
            "crowdsec:cscli",
            "api",
            "manual",
            "feed:x",
        ] {
            o.offer(&[net], &holder(source, None));
        }
        assert!(o.is_empty());
        o.offer(&[net], &holder("app:validator", None));
        o.offer(&[net], &holder("auto-ban", Some(5)));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn the_queue_is_bounded_dropping_the_oldest() {
        let mut o = Outbox::new(&config(3));
        let nets: Vec<IpNet> = (1..=5)
            .map(|i| format!("198.18.0.{i}/32").parse().unwrap())
            .collect();
        o.offer(&nets, &holder("auto-ban", None));
        assert_eq!(o.len(), 3);
        assert_eq!(o.status.dropped, 2);
        let taken = o.take(2);
        assert_eq!(taken[0].net, nets[2], "the oldest were dropped");
        o.offer(&nets[..2], &holder("auto-ban", None));
        o.put_back(taken);
        assert_eq!(o.len(), 3);
        assert_eq!(o.status.dropped, 4);
        assert_eq!(o.reply().queued, 3);
    }

    #[test]
    fn alerts_have_the_lapi_shape() {
        let bans = [
            Ban {
                net: "198.18.0.7/32".parse().unwrap(),
                source: "app:validator".into(),
                reason: Some("double sign".into()),
                expires: Some(1_000 + 3_600),
            },
            Ban {
                net: "2001:2::/48".parse().unwrap(),
                source: "auto-ban".into(),
                reason: None,
                expires: None,
            },
            Ban {
                net: "198.18.0.8/32".parse().unwrap(),
                source: "auto-ban".into(),
                reason: None,
                expires: Some(999),
            },
        ];
        let (body, n) = alerts_body(&bans, 1_000);
        assert_eq!(n, 2, "the expired ban is left out");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let d = &v[0]["decisions"][0];
        assert_eq!(d["scope"], "Ip");
        assert_eq!(d["value"], "198.18.0.7");
        assert_eq!(d["duration"], "3600s");
        assert_eq!(d["origin"], "groundzero");
        assert_eq!(d["type"], "ban");
        assert_eq!(d["scenario"], "groundzero/app:validator");
        assert_eq!(v[0]["message"], "double sign");
        assert_eq!(v[0]["source"]["ip"], "198.18.0.7");
        let d = &v[1]["decisions"][0];
        assert_eq!(d["scope"], "Range");
        assert_eq!(d["value"], "2001:2::/48");
        assert_eq!(d["duration"], PERMANENT);
        assert_eq!(v[1]["events"], serde_json::json!([]));
        assert_eq!(v[1]["start_at"], "1970-01-01T00:16:40Z");
    }
}
