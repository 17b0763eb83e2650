//! `/v1/journey*`: the journey summary, recent journeys, the live `text/event-stream`, and
//! switching tracing on and off.

use std::convert::Infallible;

use axum::{
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
    Json,
};
use groundzero_api::journey::{
    EventKind, HistoryMinute, HistoryReply, JourneySummary, Outcome, RecentQuery, RecentReply,
    TracingReply, TracingRequest,
};
use tokio::sync::broadcast;

use crate::journey::{summary, summary_json};
use crate::journey_ops::{hub_of, journey_view, start_tracing, stop_tracing};
use crate::{
    http::{ApiError, ApiJson},
    Shared,
};

/// `GET /v1/journey`: what the journeys add up to.
pub async fn summary_reply(State(s): State<Shared>) -> Json<JourneySummary> {
    let hub = hub_of(s).await;
    // The hub's own lock is only ever held for in-memory work: fine on an async thread.
    let h = hub.lock().unwrap_or_else(|p| p.into_inner());
    Json(summary(&h))
}

pub async fn recent(
    State(s): State<Shared>,
    query: Result<Query<RecentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RecentReply>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let outcome: Option<Outcome> = q.outcome.as_deref().map(str::parse).transpose().map_err(
        |e: groundzero_api::UnknownLabel| {
            ApiError(axum::http::StatusCode::BAD_REQUEST, e.to_string())
        },
    )?;
    let limit = q.limit.min(512);
    let hub = hub_of(s).await;
    // The hub's own lock is only ever held for in-memory work: fine on an async thread.
    let h = hub.lock().unwrap_or_else(|p| p.into_inner());
    let out = h
        .stats
        .recent(512)
        .filter(|j| outcome.is_none_or(|o| crate::wire::outcome(j.outcome) == o))
        .take(limit)
        .map(|j| journey_view(&h, j))
        .collect::<Vec<_>>();
    Ok(Json(RecentReply { journeys: out }))
}

/// `GET /v1/journey/history`: per-minute stage percentiles of the last hour.
pub async fn history(State(s): State<Shared>) -> Json<HistoryReply> {
    let hub = hub_of(s).await;
    let h = hub.lock().unwrap_or_else(|p| p.into_inner());
    let now = crate::journey::hub::unix_now().as_secs();
    Json(HistoryReply {
        minutes: h
            .history
            .minutes(now)
            .into_iter()
            .map(|m| HistoryMinute {
                journeys: m.journeys,
                stages: m.stages.iter().map(crate::wire::stage_latency).collect(),
                start_unix: m.start_unix,
            })
            .collect(),
    })
}

/// `GET /v1/journey/events`: `summary` about once a second, `journey` as they finish.
pub async fn events(
    State(s): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let hub = hub_of(s).await;
    let (rx, first) = {
        let h = hub.lock().unwrap_or_else(|p| p.into_inner());
        (h.tx.subscribe(), summary_json(&h))
    };
    let initial = futures_util::stream::once(async move {
        Ok::<_, Infallible>(
            Event::default()
                .event(EventKind::Summary.label())
                .data(first),
        )
    });
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((kind, data)) => {
                    let event = Event::default().event(kind).data(data.as_str());
                    return Some((Ok(event), rx));
                }
                // A slow viewer misses some events rather than slowing anyone else down.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    Sse::new(initial.chain(live)).keep_alive(KeepAlive::default())
}

/// `PUT /v1/journey`: turn tracing on or off, change sampling.
pub async fn configure(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<TracingRequest>,
) -> Result<Json<TracingReply>, ApiError> {
    let bad = |m: String| ApiError(axum::http::StatusCode::BAD_REQUEST, m);
    if r.sample_every == Some(0) {
        return Err(bad(
            "sample_every: must be at least 1 (1 = every packet)".into()
        ));
    }
    let filter = match &r.filter {
        Some(f) => {
            Some(groundzero::journey::parse_filter(f).map_err(|e| bad(format!("filter: {e}")))?)
        }
        None => None,
    };
    let status = tokio::task::spawn_blocking(move || {
        let mut d = s.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut *d;
        if r.enabled {
            let current = d
                .journey
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .status
                .clone();
            let every = r.sample_every.unwrap_or(if current.sample_every > 0 {
                current.sample_every
            } else {
                *d.config.raw.journey.sample_every.get_ref()
            });
            let filter = filter.unwrap_or_else(|| {
                groundzero::journey::parse_filter(&current.filter)
                    .unwrap_or(d.config.journey_filter)
            });
            start_tracing(d, every, filter)
        } else {
            stop_tracing(d)
        }
    })
    .await
    .map_err(|e| ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        ApiError(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            groundzero::error::error_chain(&e),
        )
    })?;
    Ok(Json(TracingReply {
        tracing: crate::wire::trace_status(&status),
    }))
}
