//! `/v1/journey/ab`: runs the journey's A/B in the lab (see `groundzero_lab::ab`) with this
//! daemon's program attached and then detached, and keeps the last report for the page; and
//! `/v1/journey/claims`: the project's claims beside this host's measurements.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, Json};
use groundzero::{AttachMode, IpNet};
use groundzero_api::{
    journey_ab::{AbReply, AbReport, AbRequest},
    journey_claims::{claims, ClaimsReply},
};
use groundzero_lab::ab::{self, AbPlan, XdpSwitch};

use crate::{
    http::{ApiError, ApiJson},
    journey::summary,
    journey_ops::hub_of,
    registry::{now_unix, Holder, RegistryError, Side},
    Shared,
};

/// The last A/B this daemon ran (kept in memory: a restart forgets it, and the page then says
/// "run the A/B to measure").
static LAST: Mutex<Option<AbReport>> = Mutex::new(None);
/// One A/B at a time: two would detach each other's program.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The holder of the attacker's block during the XDP drop cost.
const AB_SOURCE: &str = "app:journey-ab";
/// How long that block lasts if the A/B never removes it (a crash): longer than its burst.
const AB_HOLD: Duration = Duration::from_secs(60);

const DEFAULT_PROBES: u32 = 2_000;
/// 1 ms apart, twice; each run stops at `ab::PROBE_LIMIT` whatever the count, so that the
/// whole A/B (`ab::WORST_CASE`) fits in the API's request timeout (tested below).
const MAX_PROBES: u32 = 10_000;
const DEFAULT_FLOOD: u32 = 20_000;
const MAX_FLOOD: u32 = 100_000;

fn last() -> Option<AbReport> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `GET /v1/journey/ab`.
pub async fn get_last() -> Json<AbReply> {
    Json(AbReply { last: last() })
}

/// `GET /v1/journey/claims`.
pub async fn get_claims(State(s): State<Shared>) -> Json<ClaimsReply> {
    let hub = hub_of(s).await;
    let summary = {
        let h = hub.lock().unwrap_or_else(|p| p.into_inner());
        summary(&h)
    };
    Json(ClaimsReply {
        claims: claims(&summary, last().as_ref()),
    })
}

/// Detaches and attaches this daemon's program on the lab's node interface.
struct DaemonSwitch {
    shared: Shared,
    interface: String,
    mode: AttachMode,
}

impl XdpSwitch for DaemonSwitch {
    fn set_attached(&mut self, attached: bool) -> Result<(), String> {
        let mut d = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let result = if attached {
            d.shield.attach(&self.interface, self.mode).map(drop)
        } else {
            d.shield.detach(&self.interface)
        };
        result.map_err(|e| {
            format!(
                "{} {}: {}",
                if attached {
                    "attaching to"
                } else {
                    "detaching from"
                },
                self.interface,
                groundzero::error::error_chain(&e)
            )
        })
    }

    fn xdp_packets(&self) -> Option<u64> {
        let d = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let ifindex = d
            .shield
            .attachments()
            .iter()
            .find(|a| a.interface == self.interface)?
            .ifindex;
        d.shield
            .interface_counters(ifindex)
            .ok()
            .map(|c| c.total().packets)
    }

    /// Through the registry with the A/B's own holder, like every other block (one guard, one
    /// journal): a block another source holds on the same address stays when the A/B removes
    /// its hold, and a crash mid-A/B leaves a journaled hold that expires by itself.
    fn set_blocked(&mut self, addr: IpAddr, blocked: bool) -> Result<(), String> {
        let net = IpNet::from(addr);
        let mut d = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut *d;
        let err = |e: RegistryError| format!("{net}: {e}");
        if blocked {
            let now = now_unix();
            let holder = Holder {
                source: AB_SOURCE.into(),
                reason: Some("the journey A/B's XDP drop cost".into()),
                created: now,
                expires: Some(now.saturating_add(AB_HOLD.as_secs())),
            };
            d.registry
                .add(
                    &mut d.shield,
                    Side::Block,
                    &[net],
                    &holder,
                    groundzero::guard::Policy::STRICT,
                    true,
                )
                .map_err(err)?;
        } else {
            d.registry
                .remove(&mut d.shield, Side::Block, &[net], Some(AB_SOURCE))
                .map_err(err)?;
        }
        Ok(())
    }
}

/// `POST /v1/journey/ab`: runs the A/B (some seconds) and returns its report.
pub async fn run(
    State(s): State<Shared>,
    ApiJson(r): ApiJson<AbRequest>,
) -> Result<Json<AbReport>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let probes = r.probes.unwrap_or(DEFAULT_PROBES);
    if !(1..=MAX_PROBES).contains(&probes) {
        return Err(bad(format!("probes: 1 to {MAX_PROBES} (got {probes})")));
    }
    let flood_packets = r.flood_packets.unwrap_or(DEFAULT_FLOOD);
    if !(1..=MAX_FLOOD).contains(&flood_packets) {
        return Err(bad(format!(
            "flood_packets: 1 to {MAX_FLOOD} (got {flood_packets})"
        )));
    }
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "an A/B is already running: wait for its report (GET /v1/journey/ab)".into(),
        ));
    }
    // Kept and released on the blocking thread: a request that times out (or a client that
    // goes away) drops this future, but the A/B still ends, is kept, and frees the way.
    let report = tokio::task::spawn_blocking(move || {
        let _running = Running;
        let report = run_blocking(s, probes, flood_packets)?;
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        Ok::<_, ApiError>(report)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(report))
}

/// Clears [`RUNNING`] however the A/B ends (a panic included).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

fn run_blocking(s: Shared, probes: u32, flood_packets: u32) -> Result<AbReport, ApiError> {
    let refused = |m: String| ApiError(StatusCode::CONFLICT, m);
    let (attached, tracing): (Vec<(String, groundzero::ActiveMode)>, String) = {
        let d = s.lock().unwrap_or_else(|p| p.into_inner());
        // In monitor mode the program drops nothing: the XDP drop cost would be a lie.
        if d.shield.monitor().unwrap_or(false) {
            return Err(refused(
                "refusing the A/B: monitor mode is on, so XDP drops nothing to measure \
                 (PUT /v1/monitor {\"enabled\": false})"
                    .into(),
            ));
        }
        // The passed burst is a flood from the lab's peer: with a rate limit on, the rate
        // bans would ban the peer's prefix and keep it banned after the A/B.
        let rate = d.config.raw.ratelimit.rate;
        if rate > 0 {
            return Err(refused(format!(
                "refusing the A/B: the rate limit is on ({rate} pps per source), and the \
                 A/B's bursts would get the lab's peer banned (set [ratelimit] rate = 0 and \
                 reload)"
            )));
        }
        let status = d
            .journey
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .clone();
        let tracing = if status.enabled {
            format!(
                "journey tracing 1 in {} ({})",
                status.sample_every, status.filter
            )
        } else {
            "journey tracing off".to_string()
        };
        let attached = d
            .shield
            .attachments()
            .iter()
            .map(|a| (a.interface.clone(), a.mode))
            .collect();
        (attached, tracing)
    };
    let lab_node = groundzero_lab::LabState::load()
        .map_err(|e| refused(e.to_string()))?
        .map(|s| s.node_if);
    // The lab's node interface if this daemon protects it; otherwise the refusal names what
    // it protects.
    let (interface, mode) = match attached
        .iter()
        .find(|(i, _)| Some(i) == lab_node.as_ref())
        .or(attached.first())
    {
        Some(found) => found.clone(),
        None => {
            return Err(refused(
                "refusing the A/B: this daemon's program is not attached to any interface".into(),
            ))
        }
    };
    let state = ab::check_lab_interface(&interface).map_err(|e| refused(e.to_string()))?;
    let mode_label = mode.label();
    let mut switch = DaemonSwitch {
        shared: s,
        interface,
        mode: match mode {
            groundzero::ActiveMode::Native => AttachMode::Native,
            groundzero::ActiveMode::Generic => AttachMode::Generic,
        },
    };
    let plan = AbPlan {
        probes,
        gap: Duration::from_millis(1),
        flood_packets,
        attached_label: format!("with XDP (attached, {mode_label}; {tracing})"),
        detached_label: format!("without XDP (detached; {tracing})"),
    };
    ab::run(&state, &plan, &mut switch).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            groundzero::error::error_chain(&e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_ab_fits_in_the_request_timeout() {
        let timeout = crate::serve::Limits::default().request_timeout;
        assert!(
            ab::WORST_CASE + Duration::from_secs(5) < timeout,
            "{:?} of A/B against a {timeout:?} request timeout",
            ab::WORST_CASE
        );
    }
}
