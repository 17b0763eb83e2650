//! The CrowdSec bouncer: `GET /v1/crowdsec`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The reply to `GET /v1/crowdsec`: what the bouncer (`[crowdsec]` in the daemon's config) did
/// last, and the watcher (`[crowdsec.push]`) in `push`. `enabled` is false, and the pull
/// fields empty, when pulling is not configured (no `api_key_file`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrowdsecReply {
    /// Failed pulls since the last success (0: healthy).
    pub consecutive_errors: u32,
    /// Live ban decisions known (the guard's refusals included: known, not enforced).
    pub decisions: u64,
    /// The last delta that changed something: seconds to apply it (registry, journal, maps).
    pub delta_apply_seconds: Option<f64>,
    /// The same delta: seconds to fetch and decode it.
    pub delta_fetch_seconds: Option<f64>,
    /// Whether `[crowdsec]` is configured.
    pub enabled: bool,
    /// Entries the live decisions ask for, by source (`crowdsec:<origin>`) and scope (`ip`,
    /// `range`).
    pub entries: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last failure, while failures last; the set in force stays through any failure.
    pub error: Option<String>,
    /// Blocks of source kind `crowdsec` the lockout guard refused (as in `GET /v1/guard`).
    pub guard_refusals: u64,
    /// Decisions skipped because their value or duration did not parse.
    pub invalid: u64,
    /// The Local API pulled from.
    pub lapi_url: String,
    /// Unix seconds of the last pull.
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last successful startup pull (at start, after failures, each
    /// resync).
    pub last_startup_pull: Option<u64>,
    /// Unix seconds of the last successful pull.
    pub last_success: Option<u64>,
    /// Failed pulls since the daemon started.
    pub pull_errors: u64,
    /// Successful pulls since the daemon started.
    pub pulls: u64,
    /// The watcher (`[crowdsec.push]`): bans this host made, pushed to the LAPI as alerts.
    /// None when it is not configured.
    #[serde(default)]
    pub push: Option<CrowdsecPushReply>,
    /// Decisions the guard refused plus startup pulls refused by `max_change`.
    pub refused: u64,
    /// The last successful startup pull: seconds to apply it.
    pub startup_apply_seconds: Option<f64>,
    /// The same startup pull: seconds to fetch and decode it.
    pub startup_fetch_seconds: Option<f64>,
}

/// The watcher's state (`[crowdsec.push]`): bans made here that went, or wait to go, to the
/// LAPI as alerts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrowdsecPushReply {
    /// Failed pushes (login or `POST /v1/alerts`) since the last success (0: healthy).
    pub consecutive_errors: u32,
    /// Bans dropped, oldest first, because the queue was full (a long LAPI outage).
    pub dropped: u64,
    /// The last failure, while failures last; bans stay queued and are retried.
    pub error: Option<String>,
    /// The LAPI pushed to.
    pub lapi_url: String,
    /// Unix seconds of the last attempt (login or POST).
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last successful `POST /v1/alerts`.
    pub last_push: Option<u64>,
    /// Successful logins (`POST /v1/watchers/login`): the first, then one per expired token.
    pub logins: u64,
    /// The watcher's machine id (`cscli machines add <id>`).
    pub machine_id: String,
    /// Failed logins and POSTs since the daemon started.
    pub push_errors: u64,
    /// Alerts (one per ban) the LAPI accepted since the daemon started.
    pub pushed_alerts: u64,
    /// The largest number of bans held while the LAPI cannot be reached.
    pub queue_capacity: u64,
    /// Bans waiting to be pushed.
    pub queued: u64,
    /// Which bans are pushed: `auto-ban`, `app`, `api`, `manual`.
    pub sources: Vec<String>,
}

/// The CrowdSec bouncer and watcher in one line, as `GET /v1/feeds` and `GET /v1/stats` show
/// them beside the feeds (`crowdsec`, absent when `[crowdsec]` is not configured). The whole
/// state is `GET /v1/crowdsec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecSummary {
    /// Failed pulls since the last success.
    pub consecutive_errors: u32,
    /// Live ban decisions held.
    pub decisions: u64,
    /// The last pull failure, while failures last (the set in force stays).
    pub error: Option<String>,
    /// Unix seconds of the last successful pull.
    pub last_success: Option<u64>,
    /// Whether decisions are pulled (`api_key_file` set).
    pub pull: bool,
    /// Failed pulls since the daemon started.
    pub pull_errors: u64,
    /// The last push failure, while failures last (`[crowdsec.push]` only).
    pub push_error: Option<String>,
    /// Failed pushes since the daemon started (`[crowdsec.push]` only).
    pub push_errors: Option<u64>,
    /// Alerts pushed since the daemon started (`[crowdsec.push]` only).
    pub pushed_alerts: Option<u64>,
    /// Bans waiting to be pushed (`[crowdsec.push]` only).
    pub queued: Option<u64>,
}

impl From<&CrowdsecReply> for CrowdsecSummary {
    fn from(r: &CrowdsecReply) -> Self {
        CrowdsecSummary {
            consecutive_errors: r.consecutive_errors,
            decisions: r.decisions,
            error: r.error.clone(),
            last_success: r.last_success,
            pull: r.enabled,
            pull_errors: r.pull_errors,
            push_error: r.push.as_ref().and_then(|p| p.error.clone()),
            push_errors: r.push.as_ref().map(|p| p.push_errors),
            pushed_alerts: r.push.as_ref().map(|p| p.pushed_alerts),
            queued: r.push.as_ref().map(|p| p.queued),
        }
    }
}
