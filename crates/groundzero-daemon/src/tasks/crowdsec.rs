//! groundzero as a CrowdSec bouncer: pulls ban decisions from a Local API and holds them in the
//! registry (so through the guard), as `crowdsec:<origin>` with the scenario as reason and the
//! decision's remaining time as expiry.
//!
//! The first pull, and the first after any failure, is a startup pull
//! (`/v1/decisions/stream?startup=true`): the LAPI's whole live set replaces what crowdsec
//! decisions held before (a restart of the daemon or an outage of the LAPI converges), unless
//! it would change more than `max_change` of it (then it is refused and the set stays, like a
//! feed). Later pulls are deltas, and every `resync_interval` a startup pull again. A failed pull changes nothing: the set stays in force, the
//! error is kept in [`CrowdsecStatus`], and pulls back off ([`backoff`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    time::Duration,
};

use ipnet::IpNet;

use groundzero::guard::Policy;
use groundzero_api::SourceKind;

use crate::{
    config::ValidCrowdsec,
    crowdsec_stream::{self, Book, Changes, Stream, StreamError},
    registry::{now_unix, EntryStatus, Holder, RegistryError, Side},
    stop::Stop,
    Daemon, Shared,
};

/// Sent as `User-Agent` (the LAPI lists bouncers by it).
pub const USER_AGENT: &str = concat!("crowdsec-groundzero-bouncer/", env!("CARGO_PKG_VERSION"));
/// The longest wait between pulls after failures (and at most 8 pull intervals).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The largest stream body read (100,000 decisions are about 20 MB).
const MAX_BODY: u64 = 512 << 20;

/// What the bouncer did last: the API's reply (`GET /v1/crowdsec`), kept up to date here;
/// the handler adds the guard's count.
pub type CrowdsecStatus = groundzero_api::crowdsec::CrowdsecReply;

/// Why one pull failed (the set in force stays).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("reading crowdsec.api_key_file {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("crowdsec.api_key_file {path} is empty")]
    EmptyKey { path: String },
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("GET {url}: HTTP {status}{hint}: {body}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("GET {url}: {source}")]
    Stream {
        url: String,
        #[source]
        source: StreamError,
    },
    #[error(
        "startup pull refused, the current set stays in force: it would add and remove \
         {:.0}% of the {held} entries crowdsec holds (max_change {:.0}%)",
        .share * 100.0,
        .max * 100.0
    )]
    TooLarge { share: f64, max: f64, held: usize },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Reads the bouncer key (trimmed).
fn read_key(config: &ValidCrowdsec) -> Result<String, PullError> {
    let path = config.api_key_file.display().to_string();
    let key = std::fs::read_to_string(&config.api_key_file)
        .map_err(|source| PullError::Key {
            path: path.clone(),
            source,
        })?
        .trim()
        .to_string();
    if key.is_empty() {
        return Err(PullError::EmptyKey { path });
    }
    Ok(key)
}

/// One `GET /v1/decisions/stream`, decoded. Blocking: call from a blocking thread.
pub fn fetch(config: &ValidCrowdsec, startup: bool) -> Result<Stream, PullError> {
    let key = read_key(config)?;
    let url = format!(
        "{}/v1/decisions/stream{}",
        config.lapi_url,
        if startup { "?startup=true" } else { "" }
    );
    // A slow LAPI is a failed pull (a startup pull of 100,000 decisions takes a 1.4.6 LAPI
    // about 4 s to serve here).
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let response = match agent
        .get(&url)
        .set("User-Agent", USER_AGENT)
        .set("X-Api-Key", &key)
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(status, r)) => {
            return Err(PullError::Status {
                url,
                status,
                hint: if status == 403 {
                    " (the LAPI refused the bouncer key)"
                } else {
                    ""
                },
                body: crate::lapi_http::error_body(r),
            });
        }
        Err(e) => {
            let message = crate::lapi_http::transport_message(&url, &e);
            return Err(PullError::Http { url, message });
        }
    };
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)
        .map_err(|e| PullError::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
    crowdsec_stream::decode(&body).map_err(|source| PullError::Stream { url, source })
}

/// The wait after `failures` failures in a row: doubling from the interval, up to a minute
/// or 8 intervals, whichever is shorter, and never shorter than the interval.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1 << failures.min(16));
    doubled
        .min(MAX_BACKOFF.min(interval.saturating_mul(8)))
        .max(interval)
}

/// Pulls until `stop` (a pull in progress finishes first).
pub async fn crowdsec_loop(shared: Shared, config: ValidCrowdsec, stop: Stop) {
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    {
        let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
        d.crowdsec = Some(CrowdsecStatus {
            enabled: true,
            lapi_url: config.lapi_url.clone(),
            ..CrowdsecStatus::default()
        });
    }
    // None: the next pull is a startup pull.
    let mut book: Option<Book> = None;
    // When the last startup pull succeeded. A real LAPI can leave a decision out of every
    // delta (one created while a pull ran: seen here with a bulk import), so the whole set is
    // pulled again every `resync_interval`.
    let mut synced_at: Option<std::time::Instant> = None;
    loop {
        let startup =
            book.is_none() || synced_at.is_some_and(|t| t.elapsed() >= config.resync_interval);
        let shared_ = shared.clone();
        let config_ = config.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let fetched = fetch(&config_, startup);
            let fetch_seconds = started.elapsed().as_secs_f64();
            let mut d = shared_.lock().unwrap_or_else(|p| p.into_inner());
            let d = &mut *d;
            let (book, mut outcome) = match fetched {
                Ok(stream) => apply(d, &config_, book, startup, &stream),
                Err(e) => (None, Err(e)),
            };
            if let Ok(applied) = &mut outcome {
                applied.fetch_seconds = fetch_seconds;
            }
            let failures = record(d, &config_, book.as_ref(), &outcome);
            (book, failures)
        })
        .await;
        let failures;
        (book, failures) = match joined {
            Ok(result) => result,
            Err(e) => {
                log::error!("crowdsec: a pull panicked: {e}");
                (None, 1)
            }
        };
        if startup && book.is_some() {
            synced_at = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(backoff(config.pull_interval, failures)) => {}
        }
    }
}

/// What one successful pull changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Applied {
    pub startup: bool,
    pub held: usize,
    pub released: usize,
    pub refused: usize,
    pub invalid: usize,
    pub fetch_seconds: f64,
    pub apply_seconds: f64,
}

/// The (entry, source) pairs crowdsec decisions hold in the registry now.
fn held_now(d: &Daemon) -> Result<BTreeSet<(IpNet, String)>, RegistryError> {
    Ok(d.registry
        .entries(&d.shield, Some(Side::Block), Some("crowdsec"), usize::MAX)?
        .into_iter()
        .flat_map(|view| {
            view.holders
                .into_iter()
                .filter(|h| h.source.kind() == SourceKind::Crowdsec)
                .map(move |h| (view.entry, h.source.to_string()))
        })
        .collect())
}

/// Applies one stream: a startup pull (`startup`, or no `book` yet; a `book` then is the
/// previous one, so unchanged holds are not written again) or a delta. Returns the book to keep
/// (None after a failure: the next pull is a startup pull).
pub fn apply(
    d: &mut Daemon,
    config: &ValidCrowdsec,
    book: Option<Book>,
    startup: bool,
    stream: &Stream,
) -> (Option<Book>, Result<Applied, PullError>) {
    let started = std::time::Instant::now();
    let now = now_unix();
    let plan = crowdsec_stream::plan(stream, &config.filter, now);
    let startup = startup || book.is_none();
    let (book, changes) = match book {
        Some(mut book) if !startup => {
            let changes = book.delta(&plan);
            (book, changes)
        }
        previous => {
            let held = match held_now(d) {
                Ok(h) => h,
                Err(e) => return (None, Err(e.into())),
            };
            let (book, changes) = Book::startup(&plan, &held, previous.as_ref());
            // Judged on what would really change: entries the guard will refuse are not
            // additions (they would otherwise refuse every startup pull after a restart).
            let allowed: Vec<IpNet> =
                match d
                    .registry
                    .entries(&d.shield, Some(Side::Allow), None, usize::MAX)
                {
                    Ok(views) => views.into_iter().map(|v| v.entry).collect(),
                    Err(e) => return (None, Err(e.into())),
                };
            let policy = policy(config);
            let accepted: BTreeSet<(IpNet, String)> = book
                .keys()
                .into_iter()
                .filter(|(net, _)| d.registry.guard().check(net, &allowed, policy).is_ok())
                .collect();
            let share = crowdsec_stream::change_share(&held, &accepted);
            if share > config.max_change {
                return (
                    None,
                    Err(PullError::TooLarge {
                        share,
                        max: config.max_change,
                        held: held.len(),
                    }),
                );
            }
            (book, changes)
        }
    };
    for (value, why) in &plan.skipped.invalid {
        log::warn!(
            "crowdsec: skipped a decision on {}: {}",
            groundzero::text::for_terminal(value),
            groundzero::text::for_terminal(why)
        );
    }
    match write(d, config, &changes, now) {
        Ok(refused) => (
            Some(book),
            Ok(Applied {
                startup,
                held: changes.holds.len(),
                released: changes.releases.len(),
                refused,
                invalid: plan.skipped.invalid.len(),
                fetch_seconds: 0.0,
                apply_seconds: started.elapsed().as_secs_f64(),
            }),
        ),
        Err(e) => (None, Err(e.into())),
    }
}

/// How the guard judges crowdsec decisions.
fn policy(config: &ValidCrowdsec) -> Policy {
    Policy {
        force: false,
        allow_wide: config.allow_wide,
    }
}

/// Holds first, releases after: an entry moving between decisions is never out of the maps.
/// Returns how many entries the guard refused.
fn write(
    d: &mut Daemon,
    config: &ValidCrowdsec,
    changes: &Changes,
    now: u64,
) -> Result<usize, RegistryError> {
    let policy = policy(config);
    let mut refused = 0;
    for ((source, reason, expires), nets) in changes.hold_groups() {
        let holder = Holder {
            source,
            reason: Some(reason),
            created: now,
            expires: Some(expires),
        };
        // One call per group: one journal write. Not all-or-nothing: one decision on a
        // protected address must not keep the others out.
        let outcomes = d
            .registry
            .add(&mut d.shield, Side::Block, &nets, &holder, policy, false)?;
        for o in outcomes {
            if let EntryStatus::Refused { why } = o.status {
                refused += 1;
                log::warn!(
                    "crowdsec: refused {} ({}, {}): {why}",
                    o.entry,
                    holder.source,
                    groundzero::text::for_terminal(holder.reason.as_deref().unwrap_or(""))
                );
            }
        }
    }
    for (source, nets) in changes.release_groups() {
        d.registry
            .remove(&mut d.shield, Side::Block, &nets, Some(&source))?;
    }
    Ok(refused)
}

/// Updates the status after one attempt and logs; returns the failures in a row.
fn record(
    d: &mut Daemon,
    config: &ValidCrowdsec,
    book: Option<&Book>,
    outcome: &Result<Applied, PullError>,
) -> u32 {
    let status = d.crowdsec.get_or_insert_with(|| CrowdsecStatus {
        enabled: true,
        lapi_url: config.lapi_url.clone(),
        ..CrowdsecStatus::default()
    });
    let now = now_unix();
    status.last_attempt = Some(now);
    match outcome {
        Ok(applied) => {
            status.pulls += 1;
            status.last_success = Some(now);
            status.error = None;
            status.consecutive_errors = 0;
            status.refused += applied.refused as u64;
            status.invalid += applied.invalid as u64;
            if applied.startup {
                status.last_startup_pull = Some(now);
                status.startup_fetch_seconds = Some(applied.fetch_seconds);
                status.startup_apply_seconds = Some(applied.apply_seconds);
            } else if applied.held + applied.released + applied.refused > 0 {
                status.delta_fetch_seconds = Some(applied.fetch_seconds);
                status.delta_apply_seconds = Some(applied.apply_seconds);
            }
            if let Some(book) = book {
                status.decisions = book.len() as u64;
                let mut entries: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
                for (net, source) in book.keys() {
                    let scope = if net.prefix_len() == net.max_prefix_len() {
                        "ip"
                    } else {
                        "range"
                    };
                    *entries
                        .entry(source)
                        .or_default()
                        .entry(scope.to_string())
                        .or_default() += 1;
                }
                status.entries = entries;
            }
            if applied.startup || applied.held + applied.released + applied.refused > 0 {
                log::info!(
                    "crowdsec: {} pull: {} held, {} released, {} refused ({} live decisions; \
                     fetched in {:.3}s, applied in {:.3}s)",
                    if applied.startup { "startup" } else { "delta" },
                    applied.held,
                    applied.released,
                    applied.refused,
                    status.decisions,
                    applied.fetch_seconds,
                    applied.apply_seconds
                );
            }
        }
        Err(e) => {
            status.pull_errors += 1;
            status.consecutive_errors = status.consecutive_errors.saturating_add(1);
            if matches!(e, PullError::TooLarge { .. }) {
                status.refused += 1;
            }
            let text = groundzero::text::for_terminal(&e.to_string()).into_owned();
            log::warn!("crowdsec: pull failed, the current set stays in force: {text}");
            status.error = Some(text);
        }
    }
    status.consecutive_errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_a_minute() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(10), 0), s(10));
        assert_eq!(backoff(s(10), 1), s(20));
        assert_eq!(backoff(s(10), 2), s(40));
        assert_eq!(backoff(s(10), 3), s(60));
        assert_eq!(backoff(s(10), 300), s(60));
        assert_eq!(backoff(s(1), 2), s(4));
        assert_eq!(backoff(s(1), 9), s(8), "at most 8 intervals");
        assert_eq!(
            backoff(s(120), 5),
            s(120),
            "never shorter than the interval"
        );
    }
}
