//! `GET /v1/crowdsec`: the CrowdSec bouncer's state (`[crowdsec]`).

use axum::{extract::State, Json};
use groundzero_api::crowdsec::{CrowdsecReply, CrowdsecSummary};

use super::{with_state, ApiError};
use crate::{Daemon, Shared};

/// The bouncer's last pulls, errors and entries by origin and scope, plus how many crowdsec
/// decisions the guard refused, and the watcher's pushes (`push`); `enabled: false` when
/// pulling is not configured, `push: null` when pushing is not.
pub(super) async fn status(State(s): State<Shared>) -> Result<Json<CrowdsecReply>, ApiError> {
    with_state(s, |d| Ok(Json(reply(d).unwrap_or_default()))).await
}

/// The bouncer's and watcher's state; None when neither is configured.
pub(super) fn reply(d: &Daemon) -> Option<CrowdsecReply> {
    let push = d.registry.push().map(|o| o.reply());
    if d.crowdsec.is_none() && push.is_none() {
        return None;
    }
    let mut reply = d.crowdsec.clone().unwrap_or_default();
    reply.push = push;
    reply.guard_refusals = d
        .registry
        .refusal_counts()
        .get("crowdsec")
        .copied()
        .unwrap_or(0);
    Some(reply)
}

/// The one-line state `GET /v1/feeds` and `GET /v1/stats` show.
pub(super) fn summary(d: &Daemon) -> Option<CrowdsecSummary> {
    reply(d).as_ref().map(CrowdsecSummary::from)
}
