//! `GET /v1/crowdsec`: the CrowdSec bouncer's state (`[crowdsec]`).

use axum::{extract::State, Json};
use groundzero_api::crowdsec::CrowdsecReply;

use super::{with_state, ApiError};
use crate::Shared;

/// The bouncer's last pulls, errors and entries by origin and scope, plus how many crowdsec
/// decisions the guard refused, and the watcher's pushes (`push`); `enabled: false` when
/// pulling is not configured, `push: null` when pushing is not.
pub(super) async fn status(State(s): State<Shared>) -> Result<Json<CrowdsecReply>, ApiError> {
    with_state(s, |d| {
        let mut reply = d.crowdsec.clone().unwrap_or_default();
        reply.push = d.registry.push().map(|o| o.reply());
        reply.guard_refusals = d
            .registry
            .refusal_counts()
            .get("crowdsec")
            .copied()
            .unwrap_or(0);
        Ok(Json(reply))
    })
    .await
}
