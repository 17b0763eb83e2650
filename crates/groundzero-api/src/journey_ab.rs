//! The journey's A/B (`POST /v1/journey/ab` runs it, `GET /v1/journey/ab` reads the last one):
//! the same measured traffic in the lab with the XDP program attached and then detached, timed
//! per packet in the same way in both runs (socket timestamps, never the XDP tag), and what a
//! blocked packet costs when XDP drops it and when the stack does.
//!
//! Every figure carries what it is (`label`) and how it was measured (`how`).

use serde::{Deserialize, Serialize};

/// `POST /v1/journey/ab`: how much traffic to measure. Bounded by the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbRequest {
    /// Blocked packets sent per drop-cost run (default 20,000, at most 100,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_packets: Option<u32>,
    /// UDP probes per run (default 2,000, at most 10,000; 1 ms apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
}

/// `GET /v1/journey/ab`: the last A/B this daemon ran, if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AbReply {
    /// `None` until an A/B has been run: the page then says "run the A/B to measure".
    pub last: Option<AbReport>,
}

/// One A/B: the two runs and the drop costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    /// What a blocked packet costs, by who drops it.
    pub blocked: Vec<DropCost>,
    /// How the confidence intervals are computed.
    pub ci_method: String,
    /// The lab interface whose XDP program was detached for run B.
    pub interface: String,
    /// `/proc/loadavg` when the A/B started: the load it was measured under.
    pub load: String,
    /// Run A (XDP attached) then run B (XDP detached).
    pub runs: Vec<AbRun>,
    /// When the A/B started (ms since the Unix epoch).
    pub unix_ms: u64,
}

impl AbReport {
    /// The run with the program attached (`true`) or detached (`false`).
    pub fn run(&self, xdp_attached: bool) -> Option<&AbRun> {
        self.runs.iter().find(|r| r.xdp_attached == xdp_attached)
    }
}

/// One run of the probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbRun {
    /// Receiving side's CPU per probe, ns; `None` if it could not be read.
    pub cpu_ns_per_packet: Option<f64>,
    /// How `cpu_ns_per_packet` was measured.
    pub cpu_how: String,
    /// "with XDP (attached, native)", "without XDP (detached)".
    pub label: String,
    /// Probes whose three timestamps were all read.
    pub probes_measured: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Per-stage latencies, in path order.
    pub stages: Vec<AbStage>,
    /// Whether the XDP program was attached during this run.
    pub xdp_attached: bool,
}

impl AbRun {
    /// The stage named `name` (see [`AbStage::WIRE_TO_STACK`] and its siblings).
    pub fn stage(&self, name: &str) -> Option<&AbStage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// One stage of a probe's path, over every measured probe of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbStage {
    /// Probes measured at this stage.
    pub count: u64,
    /// Which timestamps it is the difference of.
    pub how: String,
    /// What it is, for people.
    pub label: String,
    /// `wire_to_stack`, `stack_to_app`, `end_to_end`.
    pub name: String,
    /// Median, with its 95% confidence interval.
    pub p50: Estimate,
    /// 99th percentile, with its 95% confidence interval.
    pub p99: Estimate,
}

impl AbStage {
    /// Sender's software TX stamp → receiver's software RX stamp.
    pub const WIRE_TO_STACK: &'static str = "wire_to_stack";
    /// Receiver's RX stamp → the application's read.
    pub const STACK_TO_APP: &'static str = "stack_to_app";
    /// Sender's TX stamp → the application's read.
    pub const END_TO_END: &'static str = "end_to_end";
}

/// A percentile and its confidence interval, ns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Upper bound of the 95% interval; `null`: not estimable from so few samples.
    pub hi_ns: Option<f64>,
    /// Lower bound of the 95% interval; `null`: not estimable from so few samples.
    pub lo_ns: Option<f64>,
    /// The percentile itself.
    pub ns: f64,
}

/// What one blocked packet costs the protected side, by who drops it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropCost {
    /// CPU ns per packet on the protected side; `None` if it could not be read.
    pub cpu_ns_per_packet: Option<f64>,
    /// How it was measured.
    pub how: String,
    /// "XDP_DROP (blocklisted source)", "nftables drop rule", "closed port (ICMP unreachable)".
    pub label: String,
    /// `xdp_drop`, `nft_drop`, `closed_port`.
    pub name: String,
    /// Packets the protected interface received during the run.
    pub packets: u64,
}

impl DropCost {
    /// Dropped by the XDP program (the sender is blocklisted).
    pub const XDP_DROP: &'static str = "xdp_drop";
    /// Dropped by an nftables rule (XDP detached).
    pub const NFT_DROP: &'static str = "nft_drop";
    /// Sent to a port nobody listens on (XDP detached): the stack drops it and answers ICMP.
    pub const CLOSED_PORT: &'static str = "closed_port";
}

fn sample_stage(name: &str, label: &str, p50: f64) -> AbStage {
    let est = |ns: f64| Estimate {
        hi_ns: Some(ns * 1.05),
        lo_ns: Some(ns * 0.95),
        ns,
    };
    AbStage {
        count: 1_998,
        how: "difference of two CLOCK_REALTIME socket timestamps".into(),
        label: label.into(),
        name: name.into(),
        p50: est(p50),
        p99: est(p50 * 4.0),
    }
}

fn sample_run(xdp_attached: bool, extra: f64) -> AbRun {
    AbRun {
        cpu_ns_per_packet: Some(2_400.0 + extra),
        cpu_how: "schedstat of the receiving NAPI thread and reader".into(),
        label: if xdp_attached {
            "with XDP (attached, native)".into()
        } else {
            "without XDP (detached)".into()
        },
        probes_measured: 1_998,
        probes_sent: 2_000,
        stages: vec![
            sample_stage(AbStage::WIRE_TO_STACK, "wire → stack", 6_000.0 + extra),
            sample_stage(AbStage::STACK_TO_APP, "stack → application", 14_000.0),
            sample_stage(AbStage::END_TO_END, "wire → application", 20_000.0 + extra),
        ],
        xdp_attached,
    }
}

impl crate::sample::Sample for AbReport {
    fn sample() -> Self {
        AbReport {
            blocked: vec![
                DropCost {
                    cpu_ns_per_packet: Some(310.0),
                    how: "schedstat of the receiving NAPI thread / packets received".into(),
                    label: "XDP_DROP (blocklisted source)".into(),
                    name: DropCost::XDP_DROP.into(),
                    packets: 20_000,
                },
                DropCost {
                    cpu_ns_per_packet: Some(1_900.0),
                    how: "schedstat of the receiving NAPI thread / packets received".into(),
                    label: "nftables drop rule (XDP detached)".into(),
                    name: DropCost::NFT_DROP.into(),
                    packets: 20_000,
                },
            ],
            ci_method: "order-statistic (binomial, normal approximation), 95%".into(),
            interface: "gzl-node".into(),
            load: "0.12 0.30 0.25 1/180 4242".into(),
            runs: vec![sample_run(true, 400.0), sample_run(false, 0.0)],
            unix_ms: 1_760_000_000_000,
        }
    }
}

impl crate::sample::Sample for AbReply {
    fn sample() -> Self {
        AbReply {
            last: Some(crate::sample::Sample::sample()),
        }
    }
}

impl crate::sample::Sample for AbRequest {
    fn sample() -> Self {
        AbRequest {
            flood_packets: Some(20_000),
            probes: Some(2_000),
        }
    }
}
