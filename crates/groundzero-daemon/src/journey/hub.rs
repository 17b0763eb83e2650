//! The journey hub: statistics, rates and live viewers of sampled journeys. It knows nothing of
//! the rest of the daemon; [`crate::tasks::journey`] feeds it and [`super`] joins it to the
//! daemon's state.

use std::sync::Arc;

use groundzero_api::journey::{
    JourneySummary, KernelDropCount, Outcomes, Rates as WireRates, Totals as WireTotals,
};
use tokio::sync::broadcast;

use groundzero::shield::{ProgramStats, Shield};
use groundzero::{
    journey::{Assembler, Journey, JourneyEvents, JourneyStats, Kallsyms, KernelInfo, TraceStatus},
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
    /// Whether tracing is on, how it samples, and what this kernel cannot observe.
    pub(crate) status: TraceStatus,
    /// Every finished journey, counted by stage and outcome (with latency histograms).
    pub(crate) stats: JourneyStats,
    assembler: Assembler,
    kernel: Option<KernelInfo>,
    /// Journeys not streamed to live viewers (over [`STREAM_PER_SECOND`]).
    pub(crate) skipped: u64,
    streamed_this_second: u32,
    rates: Rates,
    last_totals: Option<(std::time::Instant, Totals)>,
    /// What the XDP program and the observers cost over the last window (kernel run stats).
    cost: Option<Cost>,
    last_run_stats: Option<(std::time::Instant, RunStats)>,
    /// Live viewers: `summary` and `journey` events.
    pub(crate) tx: broadcast::Sender<(&'static str, Arc<String>)>,
}

/// Packets the XDP program saw and dropped, over every reason.
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

// What the XDP program and the observers cost, measured on this host from the kernel's own
// run-time statistics (BPF_ENABLE_STATS) over the last window: the wire type itself.
use groundzero_api::journey::Cost;

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
    /// An empty hub, with kernel symbols for naming drop locations if they are readable.
    pub fn new() -> Self {
        let symbols = Kallsyms::load().unwrap_or_else(|e| {
            log::warn!("journey: /proc/kallsyms unreadable ({e}); drop locations stay unnamed");
            Kallsyms::default()
        });
        Self {
            status: TraceStatus::default(),
            stats: JourneyStats::new(),
            assembler: Assembler::with_symbols(JOURNEY_TIMEOUT_NS, symbols),
            kernel: None,
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

    /// The running kernel's BTF and drop reasons, read once on first use.
    pub(crate) fn kernel(&mut self) -> Result<KernelInfo, groundzero::Error> {
        if let Some(kernel) = &self.kernel {
            return Ok(kernel.clone());
        }
        let kernel = KernelInfo::from_running_kernel()
            .map_err(|e| groundzero::Error::Journey(e.to_string()))?;
        self.kernel = Some(kernel.clone());
        Ok(kernel)
    }

    /// Feeds every event waiting in the ring buffer to the assembler; the journeys it closed.
    pub(crate) fn assemble(&mut self, events: &mut JourneyEvents) -> Vec<Journey> {
        let mut done = Vec::new();
        let assembler = &mut self.assembler;
        events.drain(|ev| {
            if let Some(j) = assembler.feed(ev) {
                done.push(j);
            }
        });
        done
    }

    /// Starts a new second of streaming, and closes the journeys that timed out by `now_ns`
    /// (CLOCK_MONOTONIC): those are returned.
    pub(crate) fn next_second(&mut self, now_ns: u64) -> Vec<Journey> {
        self.streamed_this_second = 0;
        self.assembler.expire(now_ns)
    }

    /// Records finished journeys in the statistics; returns those to stream to live viewers
    /// (at most [`STREAM_PER_SECOND`] a second, the rest counted as skipped).
    pub(crate) fn record(&mut self, done: Vec<Journey>) -> Vec<Journey> {
        let mut stream = Vec::new();
        for j in done {
            if self.tx.receiver_count() > 0 {
                if self.streamed_this_second < STREAM_PER_SECOND {
                    self.streamed_this_second += 1;
                    stream.push(j.clone());
                } else {
                    self.skipped += 1;
                }
            }
            self.stats.record(j);
        }
        stream
    }

    /// Sends one event (`summary`, `journey`) to every live viewer.
    pub(crate) fn broadcast(&self, kind: &'static str, text: String) {
        // No viewer is not an error: the event is simply not needed.
        let _ = self.tx.send((kind, Arc::new(text)));
    }

    /// Updates rates and costs from a new [`Sample`] taken at `now`.
    pub(crate) fn update_rates(&mut self, now: std::time::Instant, sample: Sample) {
        let Sample {
            totals: now_totals,
            run,
        } = sample;
        if let Some((then, before)) = self.last_run_stats {
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
            self.cost = Some(Cost {
                window_s: round(secs),
                xdp_ns_per_packet: per(xdp_ns, xdp_runs),
                observers_cpu_ms_per_s: round(obs_ns / 1e6 / secs),
                observers_runs_per_s: round(obs_runs / secs),
                observers_ns_per_run: per(obs_ns, obs_runs),
            });
        }
        self.last_run_stats = Some((now, run));
        if let Some((then, before)) = self.last_totals {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            let seen = now_totals.seen.saturating_sub(before.seen) as f64 / secs;
            let dropped = now_totals.dropped.saturating_sub(before.dropped) as f64 / secs;
            self.rates = Rates {
                window_s: secs,
                seen_pps: seen,
                dropped_pps: dropped,
                passed_pps: (seen - dropped).max(0.0),
            };
        }
        self.last_totals = Some((now, now_totals));
    }
}

/// What the rates and costs are computed from: the shield's counters and the kernel's run-time
/// statistics at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    totals: Totals,
    run: RunStats,
}

impl Sample {
    /// Reads the counters and run-time statistics; `None` if the counters cannot be read.
    pub(crate) fn read(shield: &Shield) -> Option<Sample> {
        let run = RunStats {
            xdp: shield.program_stats().unwrap_or_default(),
            observers: shield.observer_stats(),
        };
        shield.counters().ok().map(|c| {
            let mut totals = Totals::default();
            for r in Reason::ALL {
                let n = c.get(r).packets;
                totals.seen += n;
                if r.action() == Action::Drop {
                    totals.dropped += n;
                }
            }
            Sample { totals, run }
        })
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC exists");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `GET /v1/journey`'s body and the stream's `summary` event (documented in docs/api.md).
pub fn summary(h: &JourneyHub) -> JourneySummary {
    let r = h.rates;
    let est = |stage: &str| round(r.passed_pps * h.stats.reach_share(stage));
    let mut outcomes = Outcomes {
        unmatched: h.assembler.counts.unseen_in_stack + h.assembler.counts.unknown_id,
        ..Outcomes::default()
    };
    for (o, n) in h.stats.outcomes() {
        outcomes.set(crate::wire::outcome(o), n);
    }
    let totals = h.last_totals.map(|(_, t)| t).unwrap_or_default();
    JourneySummary {
        cost: h.cost,
        cumulative: h
            .stats
            .cumulative()
            .iter()
            .map(crate::wire::stage_latency)
            .collect(),
        drop_sites: Vec::new(),
        journeys_skipped: h.skipped,
        kernel_drop_reasons: h
            .stats
            .kernel_drop_reasons()
            .into_iter()
            .map(|(reason, count)| KernelDropCount {
                count,
                reason: h.drop_reason(reason),
            })
            .collect(),
        matching: crate::wire::match_counts(&h.assembler.counts),
        nic_to_xdp: Default::default(),
        not_observed: Vec::new(),
        outcomes,
        rates: WireRates {
            app_pps: est("app"),
            dropped_pps: round(r.dropped_pps),
            filtered_dropped_pps: 0.0,
            filtered_passed_pps: 0.0,
            filtered_seen_pps: 0.0,
            kernel_dropped_pps: est("kernel_drop"),
            passed_pps: round(r.passed_pps),
            seen_pps: round(r.seen_pps),
            socket_pps: est("socket"),
            stack_pps: est("stack"),
            window_s: round(r.window_s),
        },
        stage_rates: Vec::new(),
        stages: h
            .stats
            .stages()
            .iter()
            .map(crate::wire::stage_latency)
            .collect(),
        totals: WireTotals {
            dropped: totals.dropped,
            passed: totals.seen - totals.dropped,
            seen: totals.seen,
        },
        tracing: crate::wire::trace_status(&h.status),
        verdict: None,
    }
}

/// [`summary`] as the stream sends it.
pub fn summary_json(h: &JourneyHub) -> String {
    groundzero_api::to_json(&summary(h))
}
