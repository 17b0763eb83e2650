//! `GET /v1/crowdsec`: the CrowdSec bouncer's state (`[crowdsec]`).

use axum::{extract::State, Json};
use serde_json::{json, Value};

use super::{with_state, ApiError};
use crate::Shared;

/// The bouncer's last pulls, errors and entries by origin and scope, plus how many crowdsec
/// decisions the guard refused; `{"enabled": false}` when `[crowdsec]` is not configured.
pub(super) async fn status(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    with_state(s, |d| {
        let Some(status) = &d.crowdsec else {
            return Ok(Json(json!({ "enabled": false })));
        };
        let mut v = serde_json::to_value(status).unwrap_or_default();
        v["enabled"] = json!(true);
        v["guard_refusals"] = json!(d
            .registry
            .refusal_counts()
            .get("crowdsec")
            .copied()
            .unwrap_or(0));
        Ok(Json(v))
    })
    .await
}
