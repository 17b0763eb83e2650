//! The management API: HTTP/JSON, on a Unix socket (root only) and optionally on TCP with a
//! bearer token. Documented in docs/api.md; every error is `{"error": "..."}` with a 4xx/5xx.

mod capture;
mod crowdsec;
pub mod journey;
mod journey_ab;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use axum::{
    extract::{
        rejection::{JsonRejection, PathRejection},
        DefaultBodyLimit, FromRequest, Path, Query, Request, State,
    },
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use groundzero_api::{
    counters::{CounterView, ReasonCounters},
    endpoints,
    feeds::{FeedStatus, FeedsReply, ImportReply, ImportRequest, RefreshReply},
    guard::{GuardReply, ProtectedAddress},
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, EntryStatus, RemoveReply, RemoveRequest,
        WhyReply,
    },
    status::{
        Capacity, HealthReply, InterfaceStats, ListCount, MonitorReply, MonitorRequest,
        OriginDrops, StatsReply, XdpMode,
    },
    ErrorBody, Source, SourceKind,
};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use groundzero::guard::Policy;

use super::{
    feeds::parse_feed,
    registry::{now_unix, FeedPolicy, Holder, RegistryError, Side},
    Shared,
};
use groundzero::{
    error::error_chain,
    parse_entry,
    text::{check_text, MAX_TEXT},
    Error as ShieldError,
};

/// The longest time to live a hold may have: ten years. Longer is almost certainly a mistake
/// (or an attempt to overflow the expiry time); a permanent hold has no TTL.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Import and feed names become file names (`<name>.list`): well under the 255-byte limit.
pub const MAX_NAME: usize = 100;

/// An API error: a status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody::new(self.1))).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Shield(ShieldError::MapFull { .. }) => StatusCode::INSUFFICIENT_STORAGE,
            RegistryError::Refused(_) | RegistryError::FeedRefused { .. } => StatusCode::CONFLICT,
            // Nothing was applied and the daemon is otherwise fine: the caller may try again.
            RegistryError::Journal(_) | RegistryError::Cache { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Shield(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error_chain(&e))
    }
}

impl From<ShieldError> for ApiError {
    fn from(e: ShieldError) -> Self {
        RegistryError::Shield(e).into()
    }
}

/// `Json<T>` whose rejections (bad JSON, unknown fields, wrong content type, too large) are
/// our JSON errors with the message that says what is wrong.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = match &rejection {
                    JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    other => other.status(),
                };
                Err(ApiError(status, rejection.body_text()))
            }
        }
    }
}

pub fn router(state: Shared, token: Option<Arc<String>>, max_body: usize) -> Router {
    let router = Router::new()
        .route(endpoints::HEALTH, get(|| async { Json(HealthReply::ok()) }))
        .route(endpoints::STATS, get(stats))
        .route(endpoints::ENTRIES, get(entries))
        .route(endpoints::BLOCK, post(block))
        .route(endpoints::UNBLOCK, post(unblock))
        .route(endpoints::ALLOW, post(allow))
        .route(endpoints::UNALLOW, post(unallow))
        .route(endpoints::WHY, get(why))
        .route(endpoints::GUARD, get(guard))
        .route(endpoints::MONITOR, put(monitor))
        .route(endpoints::IMPORT, post(import))
        .route(endpoints::FEEDS, get(feeds))
        .route(endpoints::CROWDSEC, get(crowdsec::status))
        .route(
            endpoints::JOURNEY,
            get(journey::summary_reply).put(journey::configure),
        )
        .route(endpoints::JOURNEY_RECENT, get(journey::recent))
        .route(endpoints::JOURNEY_EVENTS, get(journey::events))
        .route(endpoints::JOURNEY_HISTORY, get(journey::history))
        .route(
            endpoints::JOURNEY_AB,
            get(journey_ab::get_last).post(journey_ab::run),
        )
        .route(endpoints::JOURNEY_CLAIMS, get(journey_ab::get_claims))
        .route(endpoints::FEED_REFRESH, post(refresh_feed))
        .route(endpoints::CAPTURE, get(capture::capture))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/api.md".into(),
            )
        })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {}; see docs/api.md",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let token = token.clone();
                async move {
                    let ok = req
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
                    if ok {
                        next.run(req).await
                    } else {
                        ApiError(
                            StatusCode::UNAUTHORIZED,
                            "missing or wrong bearer token".into(),
                        )
                        .into_response()
                    }
                }
            },
        )),
        None => router,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs `f` on the daemon state on a blocking thread (map syscalls, fsyncs, big imports).
async fn with_state<T: Send + 'static>(
    state: Shared,
    f: impl FnOnce(&mut super::Daemon) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut daemon = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut daemon)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("worker failed: {e}"),
        )
    })?
}

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// Parses every entry; the error names the index and the input. Nothing is applied on error.
fn parse_entries(entries: &[String]) -> Result<Vec<IpNet>, ApiError> {
    if entries.is_empty() {
        return Err(bad("`entries` is empty".into()));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, s)| parse_entry(s).map_err(|e| bad(format!("entries[{i}]: {e}"))))
        .collect()
}

/// The source an add request names (`api` if none), as a caller may set it.
fn parse_source(source: Option<String>) -> Result<Source, ApiError> {
    let source = source.unwrap_or_else(|| Source::Api.to_string());
    Source::caller_settable(&source).map_err(|_| {
        bad(format!("source `{source}`: use api, manual, auto-ban or app:<name> (feeds are set by the daemon)"))
    })
}

/// A TTL as the API takes it: at least 1 s, at most [`MAX_TTL`].
fn parse_ttl(field: &str, ttl: &str) -> Result<std::time::Duration, ApiError> {
    check_text(field, ttl, 64).map_err(|e| bad(e.to_string()))?;
    let d = humantime::parse_duration(ttl)
        .map_err(|e| bad(format!("{field} `{ttl}`: {e} (e.g. 90s, 1h, 7d)")))?;
    if d.as_secs() == 0 {
        return Err(bad(format!("{field} `{ttl}`: must be at least 1s")));
    }
    if d > MAX_TTL {
        return Err(bad(format!(
            "{field} `{ttl}`: at most 10 years (3650d); leave it out for a hold without expiry"
        )));
    }
    Ok(d)
}

fn holder(req: &AddRequest) -> Result<Holder, ApiError> {
    let created = now_unix();
    let expires = match &req.ttl {
        None => None,
        Some(ttl) => {
            let d = parse_ttl("ttl", ttl)?;
            Some(
                created
                    .checked_add(d.as_secs())
                    .ok_or_else(|| bad(format!("ttl `{ttl}`: too long")))?,
            )
        }
    };
    if let Some(reason) = &req.reason {
        check_text("reason", reason, MAX_TEXT).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Holder {
        source: parse_source(req.source.clone())?.to_string(),
        reason: req.reason.clone(),
        created,
        expires,
    })
}

async fn add(state: Shared, side: Side, req: AddRequest) -> Result<Response, ApiError> {
    let nets = parse_entries(&req.entries)?;
    let holder = holder(&req)?;
    let policy = Policy {
        force: req.force,
        allow_wide: req.force,
    };
    let all_or_nothing = req.all_or_nothing;
    with_state(state, move |d| {
        let outcomes =
            d.registry
                .add(&mut d.shield, side, &nets, &holder, policy, all_or_nothing)?;
        let count =
            |f: fn(&EntryStatus) -> bool| outcomes.iter().filter(|o| f(&o.status)).count() as u64;
        let added = count(|s| matches!(s, EntryStatus::Added));
        let refused = count(|s| matches!(s, EntryStatus::Refused { .. }));
        let entries = outcomes.len() as u64;
        let mut reply = AddReply {
            added,
            applied: entries - refused,
            entries,
            error: None,
            expires: holder.expires,
            refused,
            results: outcomes,
        };
        // Nothing applied because the guard refused it all: a conflict, with the details.
        if refused > 0 && refused == entries {
            let first = reply
                .refusals()
                .next()
                .map(|(_, why)| why)
                .unwrap_or_default();
            reply.error = Some(format!("{first}; pass force to do it anyway"));
            return Ok((StatusCode::CONFLICT, Json(reply)).into_response());
        }
        Ok(Json(reply).into_response())
    })
    .await
}

async fn remove(
    state: Shared,
    side: Side,
    req: RemoveRequest,
) -> Result<Json<RemoveReply>, ApiError> {
    let nets = parse_entries(&req.entries)?;
    let source = req.source.clone();
    with_state(state, move |d| {
        let (removed, still_held) =
            d.registry
                .remove(&mut d.shield, side, &nets, source.as_deref())?;
        Ok(Json(RemoveReply {
            removed,
            still_held,
        }))
    })
    .await
}

async fn block(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<AddRequest>,
) -> Result<Response, ApiError> {
    add(s, Side::Block, r).await
}
async fn allow(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<AddRequest>,
) -> Result<Response, ApiError> {
    add(s, Side::Allow, r).await
}
async fn unblock(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<RemoveRequest>,
) -> Result<Json<RemoveReply>, ApiError> {
    remove(s, Side::Block, r).await
}
async fn unallow(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<RemoveRequest>,
) -> Result<Json<RemoveReply>, ApiError> {
    remove(s, Side::Allow, r).await
}

async fn entries(
    State(s): State<Shared>,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EntriesReply>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let side = q.list;
    with_state(s, move |d| {
        let entries = d
            .registry
            .entries(&d.shield, side, q.source.as_deref(), q.limit)?;
        Ok(Json(EntriesReply { entries }))
    })
    .await
}

async fn why(
    State(s): State<Shared>,
    address: Result<Path<String>, PathRejection>,
) -> Result<Json<WhyReply>, ApiError> {
    let Path(address) = address.map_err(|e| bad(e.body_text()))?;
    let addr: IpAddr = groundzero::entry::parse_address(&address).map_err(|e| match e {
        // `why` takes one address, not a prefix: say so rather than list prefix examples.
        groundzero::EntryError::Invalid { .. } => bad(format!(
            "`{}` is not an IP address",
            groundzero::text::for_terminal(address.trim())
        )),
        other => bad(other.to_string()),
    })?;
    with_state(s, move |d| Ok(Json(d.registry.why(&d.shield, addr)?))).await
}

/// What the lockout guard protects right now, and how many blocks it refused by source.
async fn guard(State(s): State<Shared>) -> Result<Json<GuardReply>, ApiError> {
    with_state(s, |d| {
        let view = d.registry.guard().view();
        Ok(Json(GuardReply {
            allowlist_entries: d
                .registry
                .counts()
                .iter()
                .filter(|((side, _, _), _)| *side == Side::Allow)
                .map(|(_, n)| n)
                .sum::<u64>(),
            configured: view.configured,
            error: view.error,
            management: view
                .management
                .into_iter()
                .map(|m| ProtectedAddress {
                    entry: m.entry,
                    why: m.why.to_string(),
                })
                .collect(),
            protect_management: view.protect_management,
            read_seconds_ago: view.read_seconds_ago,
            rate_exempt: d.rate_exempt.iter().copied().collect(),
            refusals: refusals_by_kind(d.registry.refusal_counts()),
            ssh_port: view.ssh_port,
            widest_v4: view.widest_v4,
            widest_v6: view.widest_v6,
        }))
    })
    .await
}

/// The registry's refusal counts (keyed by kind as text) by [`SourceKind`]. A kind this
/// version does not know (only a journal from elsewhere has one) counts as `other`.
fn refusals_by_kind(counts: &BTreeMap<String, u64>) -> BTreeMap<SourceKind, u64> {
    let mut out = BTreeMap::new();
    for (kind, n) in counts {
        *out.entry(kind.parse().unwrap_or(SourceKind::Other))
            .or_default() += n;
    }
    out
}

async fn monitor(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<MonitorRequest>,
) -> Result<Json<MonitorReply>, ApiError> {
    with_state(s, move |d| {
        d.shield.set_monitor(r.enabled)?;
        Ok(Json(MonitorReply {
            monitor: d.shield.monitor()?,
        }))
    })
    .await
}

async fn import(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<ImportRequest>,
) -> Result<Json<ImportReply>, ApiError> {
    if r.name.is_empty()
        || r.name.len() > MAX_NAME
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        let shown: String = r.name.chars().take(40).collect();
        return Err(bad(format!(
            "name `{}{}`: 1 to {MAX_NAME} letters, digits, `-` and `_`",
            groundzero::text::for_terminal(&shown),
            if r.name.chars().count() > 40 {
                "..."
            } else {
                ""
            }
        )));
    }
    with_state(s, move |d| {
        if d.config.feeds.iter().any(|f| f.name == r.name) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "`{}` is a configured feed; import under another name",
                    r.name
                ),
            ));
        }
        let parsed = parse_feed(&r.text, r.format, &format!("import {}", r.name))
            .map_err(|e| bad(e.to_string()))?;
        // An import replaces its whole set on purpose, so the change limit of feeds does not
        // apply; the guard does, unless forced.
        let policy = FeedPolicy {
            guard: Policy {
                force: r.force,
                allow_wide: r.force,
            },
            max_change: None,
        };
        let started = std::time::Instant::now();
        let (added, removed) = d.registry.replace_feed(
            &mut d.shield,
            &r.name,
            FeedStatus::IMPORT_URL,
            r.format,
            &parsed,
            policy,
        )?;
        Ok(Json(ImportReply {
            added: added as u64,
            entries: parsed.nets.len() as u64,
            name: r.name,
            removed: removed as u64,
            seconds: started.elapsed().as_secs_f64(),
        }))
    })
    .await
}

async fn feeds(State(s): State<Shared>) -> Result<Json<FeedsReply>, ApiError> {
    with_state(s, |d| {
        Ok(Json(FeedsReply {
            crowdsec: crowdsec::summary(d),
            feeds: d.registry.feed_statuses(),
        }))
    })
    .await
}

async fn refresh_feed(
    State(s): State<Shared>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RefreshReply>, ApiError> {
    let Path(name) = name.map_err(|e| bad(e.body_text()))?;
    let feed = {
        let name = name.clone();
        with_state(s.clone(), move |d| {
            Ok(d.config.feeds.iter().find(|f| f.name == name).cloned())
        })
        .await?
    }
    .ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no configured feed `{}`",
                groundzero::text::for_terminal(&name)
            ),
        )
    })?;
    super::refresh_feed(&s, &feed).await;
    let status = with_state(s, move |d| {
        Ok(d.registry
            .feed_statuses()
            .into_iter()
            .find(|f| f.name == name))
    })
    .await?;
    Ok(Json(RefreshReply { feed: status }))
}

/// The library's counters as they travel.
fn reason_counters(c: &groundzero::Counters) -> ReasonCounters {
    c.iter()
        .map(|(r, v)| {
            (
                r,
                CounterView {
                    bytes: v.bytes,
                    packets: v.packets,
                },
            )
        })
        .collect()
}

/// Up to this many blocked entries, `/v1/stats` includes the drops by origin (reading them costs
/// a few milliseconds); above it, they are in `/metrics` only.
pub const ORIGINS_IN_STATS: u64 = 10_000;

async fn stats(State(s): State<Shared>) -> Result<Json<StatsReply>, ApiError> {
    // The blocked entries' hits are read through the reader's own map fds with the lock
    // released (as a scrape does). That walk grows with the lists (a million entries take
    // about a second), and `/v1/stats` must stay fast whatever they hold: above
    // ORIGINS_IN_STATS blocked entries the per-origin drops are left to `/metrics`.
    let (reader, held) = with_state(s.clone(), |d| {
        let held: u64 = d
            .registry
            .counts()
            .iter()
            .filter(|((side, _, _), _)| *side == Side::Block)
            .map(|(_, n)| n)
            .sum();
        Ok((d.shield.list_reader()?, held))
    })
    .await?;
    let with_origins = held <= ORIGINS_IN_STATS;
    let blocked = if with_origins {
        tokio::task::spawn_blocking(move || reader.blocked())
            .await
            .map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("worker failed: {e}"),
                )
            })??
    } else {
        Vec::new()
    };
    with_state(s, move |d| {
        let mut drops_by_origin: Vec<OriginDrops> = if with_origins {
            d.registry.drops_by_origin(&blocked)
        } else {
            Default::default()
        }
        .into_iter()
        .map(|(origin, packets)| OriginDrops { origin, packets })
        .collect();
        drops_by_origin.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.origin.cmp(&b.origin)));
        let totals = d.shield.counters()?;
        let mut interfaces = Vec::new();
        for a in d.shield.attachments() {
            let c = d.shield.interface_counters(a.ifindex)?;
            interfaces.push(InterfaceStats {
                adopted: a.adopted,
                counters: reason_counters(&c),
                ifindex: a.ifindex,
                interface: a.interface.clone(),
                mode: match a.mode {
                    groundzero::shield::ActiveMode::Native => XdpMode::Native,
                    groundzero::shield::ActiveMode::Generic => XdpMode::Generic,
                },
            });
        }
        let entries = d
            .registry
            .counts()
            .into_iter()
            .map(|((side, source, family), n)| ListCount {
                entries: n,
                family,
                list: side,
                // The registry counts by kind as text; one this version does not know
                // (only a journal from elsewhere has one) counts as `other`.
                source: source.parse().unwrap_or(SourceKind::Other),
            })
            .collect();
        let o = d.shield.options();
        Ok(Json(StatsReply {
            capacity: Capacity {
                allow: o.allow_capacity,
                cidr: o.cidr_capacity,
                exact: o.exact_capacity,
            },
            counters: reason_counters(&totals),
            crowdsec: crowdsec::summary(d),
            drops_by_origin,
            entries,
            failed_inserts: d.shield.failed_inserts(),
            interfaces,
            monitor: d.shield.monitor()?,
            uptime_seconds: d.started.elapsed().as_secs(),
        }))
    })
    .await
}
