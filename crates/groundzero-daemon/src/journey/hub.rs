//! The journey hub: statistics, rates and live viewers of sampled journeys. It knows nothing of
//! the rest of the daemon; [`crate::tasks::journey`] feeds it and [`super`] joins it to the
//! daemon's state.

use std::sync::Arc;

use groundzero_api::journey::{
    DropSite, JourneySummary, KernelDropCount, NotObserved, Observability, Outcomes, RateBasis,
    Rates as WireRates, StageRate, Totals as WireTotals, VerdictTiming,
};
use tokio::sync::broadcast;

use groundzero::shield::{ProgramStats, Shield};
use groundzero::{
    journey::{
        Assembler, Journey, JourneyEvents, JourneyStats, Kallsyms, KernelInfo, Stage, TraceStatus,
    },
    Action, Reason,
};

use super::history::History;
use super::reach::ReachWindow;

/// What the sampled XDP span covers (the `verdict` of the summary).
pub const VERDICT_SPAN: &str = "program entry (before parsing) → just before the ring-buffer \
    write: parsing, sampling, the verdict, the counters and bpf_xdp_adjust_meta; percentiles \
    over dropped and passed packets together (only passed ones are tagged)";

/// Why NIC → XDP has no figure (the `nic_to_xdp` of the summary). Not the driver's fault: the
/// RX hardware timestamp kfunc (`bpf_xdp_metadata_rx_timestamp`) is only callable from a program
/// loaded device-bound to one interface, which groundzero does not load.
pub const NIC_TO_XDP_WHY: &str = "not measured by groundzero: no device-bound program (aya 0.14 \
    does not set prog_ifindex); on veth the kfunc returns no timestamp for software packets";

/// The stages a passed packet is expected to reach, in order: those without a measurement are
/// reported as not observed.
const PATH: [Stage; 6] = [
    Stage::Gro,
    Stage::Stack,
    Stage::Ip,
    Stage::Transport,
    Stage::Socket,
    Stage::App,
];

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
    /// How far the recent passed journeys under the current filter got (the estimates' shares).
    pub(crate) reach: ReachWindow,
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
    /// Interfaces the XDP program runs on in generic mode (set when tracing starts): there
    /// the skb is built, and seen by GRO and `netif_receive_skb`, before XDP tags it.
    pub(crate) generic_interfaces: Vec<String>,
    /// Per-minute stage percentiles (`GET /v1/journey/history`).
    pub(crate) history: History,
}

/// Packets the XDP program saw and dropped, over every reason, and those in the sample filter.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    seen: u64,
    dropped: u64,
    filtered: groundzero::journey::FilteredCounts,
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
    filtered_seen_pps: f64,
    filtered_passed_pps: f64,
    filtered_dropped_pps: f64,
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
            reach: ReachWindow::default(),
            assembler: Assembler::with_symbols(JOURNEY_TIMEOUT_NS, symbols),
            kernel: None,
            skipped: 0,
            streamed_this_second: 0,
            rates: Rates::default(),
            last_totals: None,
            cost: None,
            last_run_stats: None,
            tx: broadcast::channel(1024).0,
            generic_interfaces: Vec::new(),
            history: History::default(),
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

    /// Tracing started, or its rate or filter changed.
    pub(crate) fn tracing_started(&mut self, status: TraceStatus) {
        if status.filter != self.status.filter {
            // The shares so far describe other packets than the filtered rates from now on.
            self.reach.reset();
        }
        self.status = status;
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
        let unseen = self.assembler.counts.unseen_in_stack;
        let expired = self.assembler.expire(now_ns);
        self.reach
            .record_unseen(self.assembler.counts.unseen_in_stack - unseen);
        expired
    }

    /// Records finished journeys in the statistics; returns those to stream to live viewers
    /// (at most [`STREAM_PER_SECOND`] a second, the rest counted as skipped).
    pub(crate) fn record(&mut self, done: Vec<Journey>) -> Vec<Journey> {
        let mut stream = Vec::new();
        let now_unix = unix_now().as_secs();
        let now_ns = monotonic_ns();
        for j in done {
            // The XDP hook's time on the wall clock: the history buckets by when a journey began.
            let start_unix =
                now_unix.saturating_sub(now_ns.saturating_sub(j.start_ns) / 1_000_000_000);
            self.history.record(now_unix, start_unix, &j);
            if self.tx.receiver_count() > 0 {
                if self.streamed_this_second < STREAM_PER_SECOND {
                    self.streamed_this_second += 1;
                    stream.push(j.clone());
                } else {
                    self.skipped += 1;
                }
            }
            self.reach.record(&j);
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
            let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
            let seen = per_s(now_totals.seen, before.seen);
            let dropped = per_s(now_totals.dropped, before.dropped);
            let (f, b) = (now_totals.filtered, before.filtered);
            self.rates = Rates {
                window_s: secs,
                seen_pps: seen,
                dropped_pps: dropped,
                passed_pps: (seen - dropped).max(0.0),
                filtered_seen_pps: per_s(f.seen, b.seen),
                filtered_passed_pps: per_s(f.passed, b.passed),
                filtered_dropped_pps: per_s(f.dropped, b.dropped),
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
            let mut totals = Totals {
                filtered: shield.journey_filtered().ok().flatten().unwrap_or_default(),
                ..Totals::default()
            };
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

/// Wall-clock time since the Unix epoch.
pub(crate) fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Stages on a passed packet's path that have no measurement, and why.
fn not_observed(h: &JourneyHub) -> Vec<NotObserved> {
    let measured: Vec<&str> = h.stats.stages().iter().map(|l| l.stage).collect();
    PATH.iter()
        .filter(|stage| !measured.contains(&stage.label()))
        .map(|&stage| {
            let missing: Vec<_> = h
                .status
                .stages_missing
                .iter()
                .filter(|m| m.stage == stage.label())
                .collect();
            let generic_blind = matches!(stage, Stage::Gro | Stage::Stack);
            let why = if !missing.is_empty() {
                missing
                    .iter()
                    .map(|m| format!("{} cannot be observed: {}", m.hook, m.why))
                    .collect::<Vec<_>>()
                    .join("; ")
            } else if generic_blind && !h.generic_interfaces.is_empty() {
                format!(
                    "generic XDP on {}: the skb is built and passes this hook before the XDP \
                     program runs, so it carries no tag there",
                    h.generic_interfaces.join(", ")
                )
            } else if h.stats.passed() == 0 && h.assembler.counts.unseen_in_stack > 0 {
                format!(
                    "{} sampled journeys passed XDP but none was seen after it: the driver \
                     may not carry XDP metadata (the tag) into the skb",
                    h.assembler.counts.unseen_in_stack
                )
            } else if h.stats.passed() == 0 {
                "no sampled journey has passed XDP yet".to_string()
            } else {
                format!(
                    "none of the {} sampled journeys that passed XDP was seen here",
                    h.stats.passed()
                )
            };
            NotObserved { stage, why }
        })
        .collect()
}

/// Every hook that observes `stage` failed to attach on this kernel.
fn unobservable(h: &JourneyHub, stage: Stage) -> bool {
    groundzero::journey::tracer::observer_hooks(stage)
        .all(|hook| h.status.stages_missing.iter().any(|m| m.hook == hook))
}

/// Each stage's rate with its basis: XDP's counted rates, then estimates for the filtered
/// population (its counted passed rate × the share of the recent sampled passed journeys under
/// the current filter that reached the stage, see [`ReachWindow`]) for the stages that were
/// observed.
fn stage_rates(h: &JourneyHub, not_observed: &[NotObserved]) -> Vec<StageRate> {
    let r = h.rates;
    let population = format!("packets matching \"{}\"", h.status.filter);
    let mut out = vec![
        StageRate {
            basis: RateBasis::Counted,
            population: "all traffic".into(),
            pps: round(r.seen_pps),
            share: None,
            stage: Stage::Xdp,
        },
        StageRate {
            basis: RateBasis::Counted,
            population: population.clone(),
            pps: round(r.filtered_seen_pps),
            share: None,
            stage: Stage::Xdp,
        },
    ];
    if h.reach.passed() == 0 {
        return out;
    }
    let ends = [Stage::KernelDrop, Stage::Consumed, Stage::Merged];
    for stage in PATH.iter().chain(ends.iter()) {
        if not_observed.iter().any(|n| n.stage == *stage) || unobservable(h, *stage) {
            continue;
        }
        let share = h.reach.share(stage.label());
        out.push(StageRate {
            basis: RateBasis::Estimate,
            population: population.clone(),
            pps: round(r.filtered_passed_pps * share),
            share: Some((share * 1000.0).round() / 1000.0),
            stage: *stage,
        });
    }
    out
}

/// `GET /v1/journey`'s body and the stream's `summary` event (documented in docs/api.md).
pub fn summary(h: &JourneyHub) -> JourneySummary {
    let r = h.rates;
    let not_observed = not_observed(h);
    let stage_rates = stage_rates(h, &not_observed);
    // The labelled estimates (filtered population only), or null where a stage is not observed.
    let est = |stage: Stage| {
        stage_rates
            .iter()
            .find(|s| s.stage == stage && s.basis == RateBasis::Estimate)
            .map(|s| s.pps)
    };
    let xdp = h.stats.stages().into_iter().find(|l| l.stage == "xdp");
    let kernel_mean_ns = h.cost.and_then(|c| c.xdp_ns_per_packet);
    let verdict = (xdp.is_some() || kernel_mean_ns.is_some()).then(|| VerdictTiming {
        kernel_mean_ns,
        p50_ns: xdp.as_ref().map(|l| l.p50_ns),
        p99_ns: xdp.as_ref().map(|l| l.p99_ns),
        samples: xdp.as_ref().map_or(0, |l| l.count),
        span: VERDICT_SPAN.into(),
    });
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
        drop_sites: h
            .stats
            .drop_sites()
            .into_iter()
            .map(|(function, reason, count)| DropSite {
                count,
                function,
                reason: h.drop_reason(reason),
            })
            .collect(),
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
        nic_to_xdp: Observability {
            measured: false,
            why: Some(NIC_TO_XDP_WHY.into()),
        },
        not_observed,
        outcomes,
        rates: WireRates {
            app_pps: est(Stage::App),
            dropped_pps: round(r.dropped_pps),
            filtered_dropped_pps: round(r.filtered_dropped_pps),
            filtered_passed_pps: round(r.filtered_passed_pps),
            filtered_seen_pps: round(r.filtered_seen_pps),
            kernel_dropped_pps: est(Stage::KernelDrop),
            passed_pps: round(r.passed_pps),
            seen_pps: round(r.seen_pps),
            socket_pps: est(Stage::Socket),
            stack_pps: est(Stage::Stack),
            window_s: round(r.window_s),
        },
        stage_rates,
        stages: h
            .stats
            .stages()
            .iter()
            .map(crate::wire::stage_latency)
            .collect(),
        totals: WireTotals {
            dropped: totals.dropped,
            filtered_dropped: totals.filtered.dropped,
            filtered_passed: totals.filtered.passed,
            filtered_seen: totals.filtered.seen,
            passed: totals.seen - totals.dropped,
            seen: totals.seen,
        },
        tracing: crate::wire::trace_status(&h.status),
        verdict,
    }
}

/// [`summary`] as the stream sends it.
pub fn summary_json(h: &JourneyHub) -> String {
    groundzero_api::to_json(&summary(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero::journey::{Hop, Outcome};

    fn passed(stages: &[(&'static str, u64)]) -> Journey {
        Journey {
            id: 1,
            start_ns: 0,
            family: 4,
            protocol: 17,
            src: "198.18.0.10".parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            ifindex: 3,
            reason: Reason::NoMatch,
            outcome: Outcome::Delivered,
            drop_reason: None,
            drop_function: None,
            entry: None,
            hops: stages
                .iter()
                .map(|(stage, t_ns)| Hop {
                    stage,
                    label: String::new(),
                    t_ns: *t_ns,
                    cpu: 0,
                })
                .collect(),
        }
    }

    /// A new filter starts the shares afresh; a new rate under the same filter keeps them.
    #[test]
    fn a_filter_change_restarts_the_estimates() {
        let mut h = JourneyHub::new();
        let status = |every: u32, filter: &str| TraceStatus {
            enabled: true,
            sample_every: every,
            filter: filter.into(),
            stages_missing: Vec::new(),
        };
        h.tracing_started(status(1, "udp"));
        h.rates.filtered_passed_pps = 100.0;
        h.record(vec![passed(&[
            ("xdp", 0),
            ("xdp_verdict", 200),
            ("app", 9_000),
        ])]);
        assert_eq!(summary(&h).rates.app_pps, Some(100.0));
        h.tracing_started(status(8, "udp"));
        assert_eq!(summary(&h).rates.app_pps, Some(100.0));
        h.tracing_started(status(8, "tcp"));
        assert_eq!(h.reach.passed(), 0);
        let s = summary(&h);
        assert_eq!(s.rates.app_pps, None, "no journey under the new filter yet");
        assert!(s.stage_rates.iter().all(|r| r.basis == RateBasis::Counted));
    }

    #[test]
    fn unmeasured_stages_say_why_and_get_no_estimate() {
        let mut h = JourneyHub::new();
        h.status.filter = "udp".into();
        let s = summary(&h);
        assert!(s.verdict.is_none(), "nothing measured: no verdict figure");
        assert!(!s.nic_to_xdp.measured);
        let nic_why = s.nic_to_xdp.why.as_deref().unwrap();
        assert!(
            nic_why.starts_with("not measured by groundzero"),
            "{nic_why}"
        );
        assert_eq!(s.not_observed.len(), PATH.len());
        assert!(s.not_observed[0].why.contains("no sampled journey"));
        assert!(s.stage_rates.iter().all(|r| r.basis == RateBasis::Counted));

        // Generic mode: the program runs after GRO and netif_receive_skb.
        h.generic_interfaces = vec!["eth9".into()];
        h.rates.filtered_passed_pps = 100.0;
        h.rates.passed_pps = 10_000.0; // all traffic: never the base of an estimate
        for _ in 0..3 {
            h.record(vec![passed(&[
                ("xdp", 0),
                ("xdp_verdict", 200),
                ("socket", 5_000),
                ("app", 9_000),
            ])]);
        }
        h.record(vec![passed(&[
            ("xdp", 0),
            ("xdp_verdict", 200),
            ("socket", 5_000),
        ])]);
        let s = summary(&h);
        let why = |stage: Stage| {
            s.not_observed
                .iter()
                .find(|n| n.stage == stage)
                .map(|n| n.why.clone())
        };
        assert!(why(Stage::Gro).unwrap().contains("generic XDP on eth9"));
        assert!(why(Stage::Stack).unwrap().contains("generic XDP"));
        assert!(why(Stage::Ip)
            .unwrap()
            .contains("none of the 4 sampled journeys"));
        assert_eq!(why(Stage::Socket), None);
        let rate = |stage: Stage| s.stage_rates.iter().find(|r| r.stage == stage).cloned();
        assert_eq!(
            rate(Stage::Gro),
            None,
            "no estimate for a stage not observed"
        );
        let app = rate(Stage::App).unwrap();
        assert_eq!(
            (app.basis, app.pps, app.share),
            (RateBasis::Estimate, 75.0, Some(0.75))
        );
        assert_eq!(app.population, "packets matching \"udp\"");
        assert_eq!(s.rates.app_pps, Some(75.0));
        assert_eq!(s.rates.stack_pps, None, "not observed: null, not 0");
        assert_eq!(rate(Stage::Socket).unwrap().pps, 100.0);
        let v = s.verdict.unwrap();
        assert_eq!(
            (v.p50_ns, v.samples, v.kernel_mean_ns),
            (Some(200), 4, None)
        );
    }
}
