//! What the journeys add up to: per-stage latency (p50, p99), outcomes, kernel drop reasons and
//! the most recent journeys. Fed by whoever drains the ring buffer; read by the API, the page,
//! the terminal and Prometheus.

use std::collections::{HashMap, VecDeque};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
};

use super::{Journey, Outcome};

/// Stages with a latency, in journey order; each is measured from the hop before it.
pub const LATENCY_STAGES: [(&str, &str); 10] = [
    ("xdp", "XDP verdict"),
    ("gro", "skb built"),
    ("stack", "GRO → stack"),
    ("ip", "IP receive"),
    ("transport", "to transport (UDP/TCP)"),
    ("socket", "to socket queue"),
    ("app", "queued until read"),
    ("kernel_drop", "to kernel drop"),
    ("consumed", "to consume"),
    ("merged", "to merge into the previous segment"),
];

/// How many latencies per stage the percentiles are computed over (the most recent ones).
const WINDOW: usize = 4096;
/// How many journeys are kept for "recent".
const RECENT: usize = 512;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

/// p50 and p99 over the most recent samples of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    pub label: &'static str,
    /// Samples seen since tracing started.
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

#[derive(Default)]
struct Window {
    count: u64,
    values: VecDeque<u64>,
}

impl Window {
    fn push(&mut self, v: u64) {
        self.count += 1;
        if self.values.len() == WINDOW {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    fn percentiles(&self) -> (u64, u64) {
        percentiles(self.values.iter().copied().collect())
    }
}

/// p50 and p99 of `values` (nearest rank); (0, 0) for none.
pub fn percentiles(mut values: Vec<u64>) -> (u64, u64) {
    if values.is_empty() {
        return (0, 0);
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

/// Each stage of a journey with its latency from the hop before it (the `xdp_verdict` hop
/// closes the `xdp` stage).
pub fn steps(journey: &Journey) -> Vec<(&'static str, u64)> {
    let mut prev = 0u64;
    let mut out = Vec::new();
    for hop in &journey.hops {
        if hop.stage == "xdp" {
            continue;
        }
        let stage = if hop.stage == "xdp_verdict" {
            "xdp"
        } else {
            hop.stage
        };
        out.push((stage, hop.t_ns.saturating_sub(prev)));
        prev = hop.t_ns;
    }
    out
}

/// The label of a stage in [`LATENCY_STAGES`].
pub fn stage_label(stage: &str) -> &'static str {
    LATENCY_STAGES
        .iter()
        .find(|(s, _)| *s == stage)
        .map_or("", |(_, l)| l)
}

/// Everything journeys have taught us since tracing started.
pub struct JourneyStats {
    /// Latency of each stage from the hop before it.
    step: HashMap<&'static str, Window>,
    /// Time from the XDP hook to each stage.
    cumulative: HashMap<&'static str, Window>,
    outcomes: HashMap<Outcome, u64>,
    kernel_drop_reasons: HashMap<u32, u64>,
    /// Kernel drops by (function, reason).
    drop_sites: HashMap<(String, u32), u64>,
    /// Passed journeys, and how many of them reached each stage (for edge-rate estimates).
    passed: u64,
    reached: HashMap<&'static str, u64>,
    recent: VecDeque<Journey>,
    /// `groundzero_journey_stage_seconds{stage}`.
    pub histograms: Family<StageLabel, Histogram>,
}

impl Default for JourneyStats {
    fn default() -> Self {
        Self::new()
    }
}

impl JourneyStats {
    pub fn new() -> Self {
        Self {
            step: HashMap::new(),
            cumulative: HashMap::new(),
            outcomes: HashMap::new(),
            kernel_drop_reasons: HashMap::new(),
            drop_sites: HashMap::new(),
            passed: 0,
            reached: HashMap::new(),
            recent: VecDeque::new(),
            // 250 ns to ~4 s in ×2 steps: XDP verdicts are sub-µs, reads wait on applications.
            histograms: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    250e-9, 2.0, 25,
                ))
            }),
        }
    }

    pub fn record(&mut self, journey: Journey) {
        *self.outcomes.entry(journey.outcome).or_default() += 1;
        if let Some(reason) = journey.drop_reason {
            *self.kernel_drop_reasons.entry(reason).or_default() += 1;
            let function = journey.drop_function.clone().unwrap_or_default();
            *self.drop_sites.entry((function, reason)).or_default() += 1;
        }
        let cumulative = journey
            .hops
            .iter()
            .filter(|h| h.stage != "xdp")
            .map(|h| h.t_ns);
        for ((stage, step), t_ns) in steps(&journey).into_iter().zip(cumulative) {
            self.step.entry(stage).or_default().push(step);
            self.cumulative.entry(stage).or_default().push(t_ns);
            self.histograms
                .get_or_create(&StageLabel {
                    stage: stage.to_string(),
                })
                .observe(step as f64 * 1e-9);
        }
        if journey.outcome != Outcome::XdpDrop {
            self.passed += 1;
            // Once per journey, whatever the hops: a share is never above 1.
            let mut stages: Vec<&'static str> = journey.hops.iter().map(|h| h.stage).collect();
            stages.sort_unstable();
            stages.dedup();
            for stage in stages {
                *self.reached.entry(stage).or_default() += 1;
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(journey);
    }

    /// Per-stage latency from the previous hop, in journey order.
    pub fn stages(&self) -> Vec<StageLatency> {
        latencies(&self.step)
    }

    /// Time from the XDP hook to each stage.
    pub fn cumulative(&self) -> Vec<StageLatency> {
        latencies(&self.cumulative)
    }

    pub fn outcomes(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL
            .iter()
            .map(|o| (*o, self.outcomes.get(o).copied().unwrap_or(0)))
            .collect()
    }

    /// Kernel drop reasons (raw values) by count, most frequent first.
    pub fn kernel_drop_reasons(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<_> = self
            .kernel_drop_reasons
            .iter()
            .map(|(r, n)| (*r, *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Kernel drops by (function, raw reason) with their count, most frequent first.
    pub fn drop_sites(&self) -> Vec<(String, u32, u64)> {
        let mut v: Vec<_> = self
            .drop_sites
            .iter()
            .map(|((f, r), n)| (f.clone(), *r, *n))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        v
    }

    /// Journeys that passed XDP.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Of the journeys that passed XDP, the share that reached `stage` (at most 1: a stage is
    /// counted once per journey).
    pub fn reach_share(&self, stage: &str) -> f64 {
        if self.passed == 0 {
            return 0.0;
        }
        self.reached.get(stage).copied().unwrap_or(0) as f64 / self.passed as f64
    }

    /// The most recent journeys, newest first.
    pub fn recent(&self, limit: usize) -> impl Iterator<Item = &Journey> {
        self.recent.iter().take(limit)
    }
}

fn latencies(windows: &HashMap<&'static str, Window>) -> Vec<StageLatency> {
    LATENCY_STAGES
        .iter()
        .filter_map(|(stage, label)| {
            let w = windows.get(stage)?;
            let (p50, p99) = w.percentiles();
            Some(StageLatency {
                stage,
                label,
                count: w.count,
                p50_ns: p50,
                p99_ns: p99,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::{Hop, Journey};
    use groundzero_common::Reason;

    fn journey(outcome: Outcome, times: &[(&'static str, u64)]) -> Journey {
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
            reason: if outcome == Outcome::XdpDrop {
                Reason::BlockedExact
            } else {
                Reason::NoMatch
            },
            outcome,
            drop_reason: (outcome == Outcome::KernelDrop).then_some(2),
            drop_function: (outcome == Outcome::KernelDrop).then(|| "udp_rcv".to_string()),
            entry: None,
            hops: times
                .iter()
                .map(|(stage, t)| Hop {
                    stage,
                    label: String::new(),
                    t_ns: *t,
                    cpu: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn steps_cumulative_outcomes_and_reach() {
        let mut s = JourneyStats::new();
        for i in 0..100u64 {
            s.record(journey(
                Outcome::Delivered,
                &[
                    ("xdp", 0),
                    ("xdp_verdict", 100 + i),
                    ("stack", 1000 + i),
                    ("app", 10_000),
                ],
            ));
        }
        s.record(journey(
            Outcome::XdpDrop,
            &[("xdp", 0), ("xdp_verdict", 50)],
        ));
        s.record(journey(
            Outcome::KernelDrop,
            &[
                ("xdp", 0),
                ("xdp_verdict", 100),
                ("stack", 1000),
                ("kernel_drop", 3000),
            ],
        ));
        let stages = s.stages();
        let xdp = stages.iter().find(|l| l.stage == "xdp").unwrap();
        assert_eq!(xdp.count, 102);
        assert_eq!(xdp.p50_ns, 149, "{xdp:?}");
        let stack = stages.iter().find(|l| l.stage == "stack").unwrap();
        assert_eq!(stack.p50_ns, 900);
        let app = s
            .cumulative()
            .into_iter()
            .find(|l| l.stage == "app")
            .unwrap();
        assert_eq!((app.p50_ns, app.p99_ns), (10_000, 10_000));
        assert_eq!(s.kernel_drop_reasons(), vec![(2, 1)]);
        assert_eq!(s.drop_sites(), vec![("udp_rcv".to_string(), 2, 1)]);
        let outcomes: HashMap<_, _> = s.outcomes().into_iter().collect();
        assert_eq!(outcomes[&Outcome::Delivered], 100);
        assert_eq!(outcomes[&Outcome::XdpDrop], 1);
        assert!((s.reach_share("app") - 100.0 / 101.0).abs() < 1e-9);
        assert_eq!(s.recent(1).next().unwrap().outcome, Outcome::KernelDrop);
    }
}
