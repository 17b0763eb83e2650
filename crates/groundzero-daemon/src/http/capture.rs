//! `GET /v1/capture`: captures packets in the kernel and streams them as pcapng until the
//! query's count or duration is reached, or the client goes away. Each packet's comment says
//! what groundzero decided and which entry (with its holders' sources and reasons, looked up
//! in the registry at capture time) decided it.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{rejection::QueryRejection, Query, State},
    http::{header, StatusCode},
    response::Response,
};
use groundzero::{
    capture::{CaptureFilter, CaptureReader, CaptureRecord},
    error::error_chain,
    parse_entry, Action, Error as ShieldError, Reason,
};
use groundzero_api::{
    capture::{
        CaptureQuery, DEFAULT_COUNT, DEFAULT_DURATION_S, DEFAULT_RATE, DEFAULT_SNAPLEN, MAX_COUNT,
        MAX_DURATION_S, MAX_RATE, MAX_SNAPLEN, PCAPNG_CONTENT_TYPE,
    },
    labels::parse_reason,
};
use groundzero_common::{parse, Parsed};
use tokio::sync::mpsc;

use crate::{http::ApiError, pcapng::PcapngStream, state::Daemon, Shared};

/// How often the capture loop looks at the clock and at the client.
const POLL: Duration = Duration::from_millis(100);

/// A checked query.
struct Plan {
    filter: CaptureFilter,
    count: u64,
    duration: Duration,
}

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// A number in `1..=max`, or the default; a 400 naming `name` otherwise.
fn number(value: &Option<String>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "{name}: expected a whole number from 1 to {max}, got {text:?}"
        ))),
    }
}

/// Checks the query against the daemon's attachments.
fn plan(q: &CaptureQuery, d: &Daemon) -> Result<Plan, ApiError> {
    let count = number(&q.count, "count", DEFAULT_COUNT, MAX_COUNT)?;
    let snaplen = number(&q.snaplen, "snaplen", DEFAULT_SNAPLEN, MAX_SNAPLEN)?;
    let rate_pps = number(&q.rate, "rate", DEFAULT_RATE, MAX_RATE)?;
    let duration = match &q.duration {
        None => Duration::from_secs(DEFAULT_DURATION_S),
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(MAX_DURATION_S) => d,
            _ => {
                return Err(bad(format!(
                    "duration: expected a length of time such as 30s or 5m, at most \
                     {MAX_DURATION_S}s, got {text:?}"
                )))
            }
        },
    };
    let (drops, passes) = match q.verdict.as_deref() {
        None | Some("drop") => (true, false),
        Some("pass") => (false, true),
        Some("all") => (true, true),
        Some(other) => {
            return Err(bad(format!(
                "verdict: expected drop, pass or all, got {other:?}"
            )))
        }
    };
    let reasons = match &q.reason {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|r| parse_reason(r.trim()).map_err(|e| bad(format!("reason: {e}"))))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let source = q
        .source
        .as_deref()
        .map(|s| parse_entry(s).map_err(|e| bad(format!("source: {e}"))))
        .transpose()?;
    let ifindex = match &q.interface {
        None => 0,
        Some(name) => d
            .shield
            .attachments()
            .iter()
            .find(|a| &a.interface == name)
            .map(|a| a.ifindex)
            .ok_or_else(|| {
                bad(format!(
                    "interface: groundzero is not attached to {name:?} (attached: {})",
                    d.shield
                        .attachments()
                        .iter()
                        .map(|a| a.interface.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
    };
    Ok(Plan {
        filter: CaptureFilter {
            drops,
            passes,
            reasons,
            source,
            ifindex,
            snaplen,
            rate_pps,
        },
        count: u64::from(count),
        duration,
    })
}

/// `GET /v1/capture`.
pub async fn capture(
    State(s): State<Shared>,
    query: Result<Query<CaptureQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let started = tokio::task::spawn_blocking({
        let s = s.clone();
        move || {
            let mut d = s.lock().unwrap_or_else(|p| p.into_inner());
            let plan = plan(&q, &d)?;
            let reader = d.shield.start_capture(&plan.filter).map_err(|e| match e {
                ShieldError::CaptureRunning => ApiError(StatusCode::CONFLICT, e.to_string()),
                other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&other)),
            })?;
            Ok::<_, ApiError>((plan, reader))
        }
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (plan, reader) = started?;
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || run(s, reader, plan, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, PCAPNG_CONTENT_TYPE)
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"groundzero-capture.pcapng\"",
        )
        .body(Body::from_stream(body))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The capture loop, on a blocking thread: poll, comment, write, send. Ends the capture (the
/// reader's stop clears the kernel's capture bit) however it ends.
fn run(
    s: Shared,
    mut reader: CaptureReader,
    plan: Plan,
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let deadline = Instant::now() + plan.duration;
    let result = (|| -> Result<u64, String> {
        let mut out = PcapngStream::new(plan.filter.snaplen).map_err(|e| e.to_string())?;
        // The section header at once: the client sees the capture has started.
        if tx.blocking_send(Ok(out.take())).is_err() {
            return Ok(0);
        }
        let mut written = 0;
        while written < plan.count && !tx.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut records = reader.poll(left.min(POLL)).map_err(|e| error_chain(&e))?;
            if records.is_empty() {
                continue;
            }
            records.truncate((plan.count - written) as usize);
            let comments = comments(&s, &records);
            for (record, comment) in records.iter().zip(comments) {
                out.packet(record, comment).map_err(|e| e.to_string())?;
            }
            written += records.len() as u64;
            if tx.blocking_send(Ok(out.take())).is_err() {
                break; // the client went away
            }
        }
        Ok(written)
    })();
    let lost = reader.stop();
    match (result, lost) {
        (Ok(written), Ok(lost)) => log::info!(
            "capture: {written} packets, {} over the rate, {} lost to a full buffer",
            lost.rate_limited,
            lost.buffer_full
        ),
        (Err(e), _) => {
            log::warn!("capture failed: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
        (_, Err(e)) => log::error!("capture: stopping: {}", error_chain(&e)),
    }
}

/// One comment per record; registry lookups cached per source within the batch, under one
/// short hold of the daemon's lock.
fn comments(s: &Shared, records: &[CaptureRecord]) -> Vec<String> {
    let d = s.lock().unwrap_or_else(|p| p.into_inner());
    let mut cache: HashMap<(IpAddr, u32), String> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let reason = r.reason();
            let verdict = match reason.map(Reason::action) {
                Some(Action::Drop) => "drop",
                Some(Action::Pass) => "pass",
                None => "unknown",
            };
            let label = reason.map_or("unknown", Reason::label);
            let head = format!("verdict={verdict} reason={label}");
            let Some(src) = source_of(&r.data) else {
                return head;
            };
            let tail = cache
                .entry((src, r.meta.reason))
                .or_insert_with(|| entry_text(&d, src, reason));
            format!("{head}{tail}")
        })
        .collect()
}

/// ` entry=… source=… why="…"` for the entry that decided `reason` for `src`, or ` src=…`
/// alone when no list entry decided it (no match, rate limit, a list changed since).
fn entry_text(d: &Daemon, src: IpAddr, reason: Option<Reason>) -> String {
    let why = match d.registry.why(&d.shield, src) {
        Ok(why) => why,
        Err(e) => {
            log::debug!("capture: looking up {src}: {e}");
            return format!(" src={src}");
        }
    };
    match why.matched {
        Some(entry) if Some(why.reason) == reason => {
            let sources: Vec<String> = entry.holders.iter().map(|h| h.source.to_string()).collect();
            let reason_text = entry
                .holders
                .iter()
                .find_map(|h| h.reason.clone())
                .unwrap_or_default()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!(
                " src={src} entry={} source={} why=\"{reason_text}\"",
                entry.entry,
                if sources.is_empty() {
                    "-".into()
                } else {
                    sources.join(",")
                },
            )
        }
        _ => format!(" src={src}"),
    }
}

/// The source address of a captured frame, if its captured bytes reach it.
fn source_of(frame: &[u8]) -> Option<IpAddr> {
    match parse(frame) {
        Parsed::V4 { src, .. } => Some(IpAddr::from(src)),
        Parsed::V6 { src, .. } => Some(IpAddr::from(src)),
        _ => None,
    }
}
