//! The management API: HTTP/JSON, on a Unix socket (root only) and optionally on TCP with a
//! bearer token. Documented in docs/api.md; every error is `{"error": "..."}` with a 4xx/5xx.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{
        rejection::JsonRejection, DefaultBodyLimit, FromRequest, Path, Query, Request, State,
    },
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    feeds::{parse_feed, FeedFormat},
    registry::{now_unix, Holder, RegistryError, Side},
    Shared,
};
use crate::{error::error_chain, parse_entry, Error as ShieldError};

/// An API error: a status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Shield(ShieldError::MapFull { .. }) => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
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
        .route(
            "/v1/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/v1/stats", get(stats))
        .route("/v1/entries", get(entries))
        .route("/v1/block", post(block))
        .route("/v1/unblock", post(unblock))
        .route("/v1/allow", post(allow))
        .route("/v1/unallow", post(unallow))
        .route("/v1/why/{address}", get(why))
        .route("/v1/monitor", put(monitor))
        .route("/v1/import", post(import))
        .route("/v1/feeds", get(feeds))
        .route(
            "/v1/journey",
            get(super::journey::summary).put(super::journey::configure),
        )
        .route("/v1/journey/recent", get(super::journey::recent))
        .route("/v1/journey/events", get(super::journey::events))
        .route("/v1/feeds/{name}/refresh", post(refresh_feed))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/api.md".into(),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    /// Addresses or prefixes.
    entries: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    /// Time to live, e.g. "90s", "1h", "7d". None: until removed.
    #[serde(default)]
    ttl: Option<String>,
    /// `api` (default), `manual`, `auto-ban` or `app:<name>`.
    #[serde(default)]
    source: Option<String>,
    /// Override the lockout guard.
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveRequest {
    entries: Vec<String>,
    /// Only remove this source's hold (default: every non-feed hold).
    #[serde(default)]
    source: Option<String>,
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

fn parse_source(source: Option<String>) -> Result<String, ApiError> {
    let source = source.unwrap_or_else(|| "api".into());
    let valid = matches!(source.as_str(), "api" | "manual" | "auto-ban")
        || source.strip_prefix("app:").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if valid {
        Ok(source)
    } else {
        Err(bad(format!("source `{source}`: use api, manual, auto-ban or app:<name> (feeds are set by the daemon)")))
    }
}

fn holder(req: &AddRequest) -> Result<Holder, ApiError> {
    let created = now_unix();
    let expires = match &req.ttl {
        None => None,
        Some(ttl) => {
            let d = humantime::parse_duration(ttl)
                .map_err(|e| bad(format!("ttl `{ttl}`: {e} (e.g. 90s, 1h, 7d)")))?;
            if d.as_secs() == 0 {
                return Err(bad(format!("ttl `{ttl}`: must be at least 1s")));
            }
            Some(created + d.as_secs())
        }
    };
    if req.reason.as_ref().is_some_and(|r| r.len() > 512) {
        return Err(bad("reason: at most 512 bytes".into()));
    }
    Ok(Holder {
        source: parse_source(req.source.clone())?,
        reason: req.reason.clone(),
        created,
        expires,
    })
}

async fn add(state: Shared, side: Side, req: AddRequest) -> Result<Json<Value>, ApiError> {
    let nets = parse_entries(&req.entries)?;
    let holder = holder(&req)?;
    let force = req.force;
    with_state(state, move |d| {
        if side == Side::Block && !force {
            let allowed: Vec<IpNet> = d.shield.allowed()?.into_iter().map(|e| e.net).collect();
            d.guard
                .check(&nets, &allowed)
                .map_err(|r| ApiError(StatusCode::CONFLICT, r.to_string()))?;
        }
        let added = d.registry.add(&mut d.shield, side, &nets, &holder)?;
        Ok(Json(
            json!({ "added": added, "entries": nets.len(), "expires": holder.expires }),
        ))
    })
    .await
}

async fn remove(state: Shared, side: Side, req: RemoveRequest) -> Result<Json<Value>, ApiError> {
    let nets = parse_entries(&req.entries)?;
    let source = req.source.clone();
    with_state(state, move |d| {
        let (removed, still_held) =
            d.registry
                .remove(&mut d.shield, side, &nets, source.as_deref())?;
        Ok(Json(
            json!({ "removed": removed, "still_held": still_held }),
        ))
    })
    .await
}

async fn block(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<AddRequest>,
) -> Result<Json<Value>, ApiError> {
    add(s, Side::Block, r).await
}
async fn allow(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<AddRequest>,
) -> Result<Json<Value>, ApiError> {
    add(s, Side::Allow, r).await
}
async fn unblock(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<RemoveRequest>,
) -> Result<Json<Value>, ApiError> {
    remove(s, Side::Block, r).await
}
async fn unallow(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<RemoveRequest>,
) -> Result<Json<Value>, ApiError> {
    remove(s, Side::Allow, r).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    list: Option<Side>,
    source: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}
fn default_limit() -> usize {
    10_000
}

async fn entries(
    State(s): State<Shared>,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    with_state(s, move |d| {
        let list = d
            .registry
            .entries(&d.shield, q.list, q.source.as_deref(), q.limit)?;
        Ok(Json(json!({ "entries": list })))
    })
    .await
}

async fn why(
    State(s): State<Shared>,
    Path(address): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let addr: IpAddr = address
        .parse()
        .map_err(|_| bad(format!("`{address}` is not an IP address")))?;
    with_state(s, move |d| {
        Ok(Json(
            serde_json::to_value(d.registry.why(&d.shield, addr)?).unwrap_or_default(),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorRequest {
    enabled: bool,
}

async fn monitor(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<MonitorRequest>,
) -> Result<Json<Value>, ApiError> {
    with_state(s, move |d| {
        d.shield.set_monitor(r.enabled)?;
        Ok(Json(json!({ "monitor": d.shield.monitor()? })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// The import's name: its entries have source `feed:<name>`; a later import with the same
    /// name replaces them atomically.
    name: String,
    #[serde(default)]
    format: FeedFormat,
    /// The list itself.
    text: String,
    #[serde(default)]
    force: bool,
}

async fn import(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<ImportRequest>,
) -> Result<Json<Value>, ApiError> {
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(format!(
            "name `{}`: use letters, digits, `-` and `_`",
            r.name
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
        if !r.force {
            let allowed: Vec<IpNet> = d.shield.allowed()?.into_iter().map(|e| e.net).collect();
            d.guard
                .check(&parsed.nets, &allowed)
                .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
        }
        let started = std::time::Instant::now();
        let (added, removed) =
            d.registry
                .replace_feed(&mut d.shield, &r.name, "api import", r.format, &parsed)?;
        Ok(Json(json!({
            "name": r.name, "entries": parsed.nets.len(), "added": added, "removed": removed,
            "normalised": parsed.normalised, "seconds": started.elapsed().as_secs_f64(),
        })))
    })
    .await
}

async fn feeds(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    with_state(s, |d| {
        Ok(Json(json!({ "feeds": d.registry.feed_statuses() })))
    })
    .await
}

async fn refresh_feed(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let feed = {
        let d = s.lock().unwrap_or_else(|p| p.into_inner());
        d.config.feeds.iter().find(|f| f.name == name).cloned()
    }
    .ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no configured feed `{name}`"),
        )
    })?;
    super::refresh_feed(&s, &feed).await;
    let status = {
        let d = s.lock().unwrap_or_else(|p| p.into_inner());
        d.registry
            .feed_statuses()
            .into_iter()
            .find(|f| f.name == name)
    };
    Ok(Json(json!({ "feed": status })))
}

#[derive(Serialize)]
struct CounterView {
    packets: u64,
    bytes: u64,
}

async fn stats(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    with_state(s, |d| {
        let totals = d.shield.counters()?;
        let reasons = |c: &crate::Counters| -> serde_json::Map<String, Value> {
            c.iter()
                .map(|(r, v)| (r.label().to_string(), json!(CounterView { packets: v.packets, bytes: v.bytes })))
                .collect()
        };
        let mut interfaces = Vec::new();
        for a in d.shield.attachments() {
            let c = d.shield.interface_counters(a.ifindex)?;
            interfaces.push(json!({
                "interface": a.interface, "ifindex": a.ifindex, "mode": a.mode.to_string(),
                "adopted": a.adopted, "counters": reasons(&c),
            }));
        }
        let counts: Vec<Value> = d
            .registry
            .counts()
            .into_iter()
            .map(|((side, source, family), n)| json!({"list": side, "source": source, "family": family, "entries": n}))
            .collect();
        let o = d.shield.options();
        Ok(Json(json!({
            "monitor": d.shield.monitor()?,
            "uptime_seconds": d.started.elapsed().as_secs(),
            "counters": reasons(&totals),
            "interfaces": interfaces,
            "entries": counts,
            "capacity": {"exact": o.exact_capacity, "cidr": o.cidr_capacity, "allow": o.allow_capacity},
            "failed_inserts": d.shield.failed_inserts(),
        })))
    })
    .await
}
