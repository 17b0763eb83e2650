//! The daemon's side of journeys: drains the kernel's journey ring buffer and keeps the
//! statistics and recent journeys ([`JourneyHub`]) that `/v1/journey*` ([`crate::http::journey`])
//! serves.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{io::unix::AsyncFd, sync::broadcast};

use super::{Daemon, Shared};
use groundzero::shield::ProgramStats;
use groundzero::{
    journey::{
        tracer::format_filter, Assembler, FlowFilter, Journey, JourneyEvents, JourneyStats,
        Kallsyms, KernelInfo, TraceStatus,
    },
    Action, Reason,
};

/// Journeys still open this long after their XDP hook are closed as incomplete.
const JOURNEY_TIMEOUT_NS: u64 = 2_000_000_000;
/// At most this many journeys a second go to live viewers; the rest are counted as skipped
/// (the statistics still include every one).
const STREAM_PER_SECOND: u32 = 50;

/// What the journey view knows. Behind its own lock, apart from the daemon's, so that a long
/// import never stalls the ring buffer.
pub struct JourneyHub {
    pub status: TraceStatus,
    pub stats: JourneyStats,
    assembler: Assembler,
    kernel: Option<KernelInfo>,
    symbols: Kallsyms,
    pub skipped: u64,
    streamed_this_second: u32,
    rates: Rates,
    last_totals: Option<(std::time::Instant, Totals)>,
    /// What the XDP program and the observers cost over the last window (kernel run stats).
    cost: Option<Cost>,
    last_run_stats: Option<(std::time::Instant, RunStats)>,
    pub(crate) tx: broadcast::Sender<(&'static str, Arc<String>)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    seen: u64,
    dropped: u64,
}

/// The kernel's run-time accounting at one moment: the XDP program, and the observers summed.
#[derive(Clone, Copy, Debug, Default)]
struct RunStats {
    xdp: ProgramStats,
    observers: ProgramStats,
}

/// Measured on this host, from the kernel's own run-time statistics (BPF_ENABLE_STATS), over
/// the last window: the verdict's cost per packet and what tracing's observers cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Cost {
    window_s: f64,
    /// Mean time of one run of the XDP program (verdict, counters and, when on, sampling).
    xdp_ns_per_packet: Option<f64>,
    /// CPU time the observer programs used, per second of wall time (ms/s; 1000 is one CPU).
    observers_cpu_ms_per_s: f64,
    /// Observer runs per second: they run for every skb at their hooks, sampled or not.
    observers_runs_per_s: f64,
    /// Their mean time per run.
    observers_ns_per_run: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Rates {
    window_s: f64,
    seen_pps: f64,
    dropped_pps: f64,
    passed_pps: f64,
}

impl Default for JourneyHub {
    fn default() -> Self {
        Self::new()
    }
}

impl JourneyHub {
    pub fn new() -> Self {
        let symbols = Kallsyms::load().unwrap_or_else(|e| {
            log::warn!("journey: /proc/kallsyms unreadable ({e}); drop locations stay unnamed");
            Kallsyms::default()
        });
        Self {
            status: TraceStatus::default(),
            stats: JourneyStats::new(),
            assembler: Assembler::with_symbols(JOURNEY_TIMEOUT_NS, symbols.clone()),
            kernel: None,
            symbols,
            skipped: 0,
            streamed_this_second: 0,
            rates: Rates::default(),
            last_totals: None,
            cost: None,
            last_run_stats: None,
            tx: broadcast::channel(1024).0,
        }
    }

    /// The kernel's name for a drop reason.
    pub fn drop_reason(&self, value: u32) -> String {
        match &self.kernel {
            Some(k) => k.drop_reason(value),
            None => format!("reason_{value}"),
        }
    }
}

/// Turns tracing on (or changes sampling) with the daemon's shield.
pub fn start_tracing(
    d: &mut Daemon,
    sample_every: u32,
    filter: FlowFilter,
) -> Result<TraceStatus, groundzero::Error> {
    let hub = d.journey.clone();
    let mut hub = hub.lock().unwrap_or_else(|p| p.into_inner());
    if hub.kernel.is_none() {
        hub.kernel = Some(
            KernelInfo::from_running_kernel()
                .map_err(|e| groundzero::Error::Journey(e.to_string()))?,
        );
    }
    let kernel = hub.kernel.clone().expect("set above");
    let missing = d.shield.start_journey(&kernel, sample_every, filter)?;
    hub.status = TraceStatus {
        enabled: true,
        sample_every,
        filter: format_filter(&filter),
        stages_missing: missing,
    };
    let _ = &hub.symbols;
    Ok(hub.status.clone())
}

pub fn stop_tracing(d: &mut Daemon) -> Result<TraceStatus, groundzero::Error> {
    d.shield.stop_journey()?;
    let mut hub = d.journey.lock().unwrap_or_else(|p| p.into_inner());
    hub.status.enabled = false;
    Ok(hub.status.clone())
}

/// Registers a ring buffer with the runtime's poller.
pub(crate) fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd (a ring buffer map) and keeps it open until the AsyncFd,
    // which owns `inner`, is dropped: the fd cannot be closed while registered.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC exists");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Drains journey events as they come, and once a second closes timed-out journeys, updates
/// rates and sends a summary to live viewers.
pub async fn journey_loop(shared: Shared, events: JourneyEvents) {
    let hub = hub_of(shared.clone()).await;
    let events = match register(events) {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("journey: cannot poll the ring buffer: {e}");
            return;
        }
    };
    let mut events = events;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ready = events.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                let mut done = Vec::new();
                {
                    let mut h = hub.lock().unwrap_or_else(|p| p.into_inner());
                    let h = &mut *h;
                    guard.get_inner_mut().drain(|ev| {
                        if let Some(j) = h.assembler.feed(ev) {
                            done.push(j);
                        }
                    });
                }
                guard.clear_ready();
                publish(&shared, &hub, done).await;
            }
            _ = tick.tick() => {
                let expired = {
                    let mut h = hub.lock().unwrap_or_else(|p| p.into_inner());
                    h.streamed_this_second = 0;
                    h.assembler.expire(monotonic_ns())
                };
                publish(&shared, &hub, expired).await;
                update_rates(&shared, &hub).await;
                let summary = {
                    let h = hub.lock().unwrap_or_else(|p| p.into_inner());
                    summary_json(&h).to_string()
                };
                let h = hub.lock().unwrap_or_else(|p| p.into_inner());
                let _ = h.tx.send(("summary", Arc::new(summary)));
            }
        }
    }
}

/// Records finished journeys and streams some of them (with the entry that dropped them).
async fn publish(shared: &Shared, hub: &Arc<Mutex<JourneyHub>>, done: Vec<Journey>) {
    if done.is_empty() {
        return;
    }
    let mut stream = Vec::new();
    {
        let mut h = hub.lock().unwrap_or_else(|p| p.into_inner());
        for j in done {
            if h.tx.receiver_count() > 0 {
                if h.streamed_this_second < STREAM_PER_SECOND {
                    h.streamed_this_second += 1;
                    stream.push(j.clone());
                } else {
                    h.skipped += 1;
                }
            }
            h.stats.record(j);
        }
    }
    if stream.is_empty() {
        return;
    }
    let shared = shared.clone();
    let hub = hub.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let d = shared.lock().unwrap_or_else(|p| p.into_inner());
        let h = hub.lock().unwrap_or_else(|p| p.into_inner());
        for j in &stream {
            let text = journey_json(&d, &h, j).to_string();
            let _ = h.tx.send(("journey", Arc::new(text)));
        }
    })
    .await;
}

async fn update_rates(shared: &Shared, hub: &Arc<Mutex<JourneyHub>>) {
    let shared = shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        let d = shared.lock().unwrap_or_else(|p| p.into_inner());
        let run = RunStats {
            xdp: d.shield.program_stats().unwrap_or_default(),
            observers: d.shield.observer_stats(),
        };
        d.shield.counters().ok().map(|c| {
            let mut t = Totals::default();
            for r in Reason::ALL {
                let n = c.get(r).packets;
                t.seen += n;
                if r.action() == Action::Drop {
                    t.dropped += n;
                }
            }
            (t, run)
        })
    })
    .await
    .ok()
    .flatten();
    let Some((now_totals, run)) = read else {
        return;
    };
    let now = std::time::Instant::now();
    let mut h = hub.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((then, before)) = h.last_run_stats {
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let delta = |a: ProgramStats, b: ProgramStats| {
            (
                a.run_time_ns.saturating_sub(b.run_time_ns) as f64,
                a.run_count.saturating_sub(b.run_count) as f64,
            )
        };
        let (xdp_ns, xdp_runs) = delta(run.xdp, before.xdp);
        let (obs_ns, obs_runs) = delta(run.observers, before.observers);
        let per = |ns: f64, runs: f64| (runs > 0.0).then(|| round(ns / runs));
        h.cost = Some(Cost {
            window_s: round(secs),
            xdp_ns_per_packet: per(xdp_ns, xdp_runs),
            observers_cpu_ms_per_s: round(obs_ns / 1e6 / secs),
            observers_runs_per_s: round(obs_runs / secs),
            observers_ns_per_run: per(obs_ns, obs_runs),
        });
    }
    h.last_run_stats = Some((now, run));
    if let Some((then, before)) = h.last_totals {
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        let seen = now_totals.seen.saturating_sub(before.seen) as f64 / secs;
        let dropped = now_totals.dropped.saturating_sub(before.dropped) as f64 / secs;
        h.rates = Rates {
            window_s: secs,
            seen_pps: seen,
            dropped_pps: dropped,
            passed_pps: (seen - dropped).max(0.0),
        };
    }
    h.last_totals = Some((now, now_totals));
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `GET /v1/journey`'s body (documented in docs/api.md).
pub fn summary_json(h: &JourneyHub) -> Value {
    let r = h.rates;
    let est = |stage: &str| round(r.passed_pps * h.stats.reach_share(stage));
    let outcomes: serde_json::Map<String, Value> = h
        .stats
        .outcomes()
        .into_iter()
        .map(|(o, n)| (o.label().to_string(), json!(n)))
        .chain([(
            "unmatched".to_string(),
            json!(h.assembler.counts.unseen_in_stack + h.assembler.counts.unknown_id),
        )])
        .collect();
    let totals = h.last_totals.map(|(_, t)| t).unwrap_or_default();
    json!({
        "tracing": h.status,
        "rates": {
            "window_s": round(r.window_s),
            "seen_pps": round(r.seen_pps),
            "dropped_pps": round(r.dropped_pps),
            "passed_pps": round(r.passed_pps),
            "stack_pps": est("stack"),
            "socket_pps": est("socket"),
            "app_pps": est("app"),
            "kernel_dropped_pps": est("kernel_drop"),
        },
        "totals": {
            "seen": totals.seen,
            "dropped": totals.dropped,
            "passed": totals.seen - totals.dropped,
        },
        "stages": h.stats.stages(),
        "cumulative": h.stats.cumulative(),
        "outcomes": outcomes,
        "matching": h.assembler.counts,
        "kernel_drop_reasons": h.stats.kernel_drop_reasons().into_iter()
            .map(|(reason, count)| json!({"reason": h.drop_reason(reason), "count": count}))
            .collect::<Vec<_>>(),
        "journeys_skipped": h.skipped,
        "cost": h.cost,
    })
}

/// One journey as JSON, with the entry that decided a drop and the interface's name.
pub fn journey_json(d: &Daemon, h: &JourneyHub, j: &Journey) -> Value {
    let entry = if j.verdict() == Action::Drop {
        d.registry
            .why(&d.shield, j.src)
            .ok()
            .and_then(|why| why.matched)
            .map(|m| {
                let holder = m.holders.first();
                json!({
                    "entry": m.entry.to_string(),
                    "source": holder.map(|h| h.source.clone()),
                    "reason": holder.and_then(|h| h.reason.clone()),
                    "expires_unix": holder.and_then(|h| h.expires),
                })
            })
    } else {
        None
    };
    let age_ns = monotonic_ns().saturating_sub(j.start_ns);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as u64)
        .unwrap_or(0)
        .saturating_sub(age_ns / 1_000_000);
    let sock = |ip: IpAddr, port: u16| match (ip, port) {
        (_, 0) => ip.to_string(),
        (IpAddr::V6(_), p) => format!("[{ip}]:{p}"),
        (IpAddr::V4(_), p) => format!("{ip}:{p}"),
    };
    json!({
        "id": j.id,
        "unix_ms": unix_ms,
        "family": j.family,
        "protocol": j.protocol_name(),
        "src": sock(j.src, j.src_port),
        "dst": sock(j.dst, j.dst_port),
        "interface": nix::net::if_::if_indextoname(j.ifindex)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("ifindex {}", j.ifindex)),
        "verdict": j.verdict().label(),
        "reason": j.reason.label(),
        "entry": entry,
        "outcome": j.outcome.label(),
        "drop_reason": j.drop_reason.map(|r| h.drop_reason(r)),
        "hops": j.hops,
        "total_ns": j.total_ns(),
    })
}

/// The journey hub, fetched on a blocking thread: the daemon's lock may be held for a while
/// (a large import), and an async worker must never wait on it.
pub(crate) async fn hub_of(s: Shared) -> Arc<Mutex<JourneyHub>> {
    tokio::task::spawn_blocking(move || s.lock().unwrap_or_else(|p| p.into_inner()).journey.clone())
        .await
        .expect("fetching the journey hub does not panic")
}
