//! Journey tracing: `GET /v1/journey` (summary), `PUT /v1/journey` (configure),
//! `GET /v1/journey/recent` and the live `GET /v1/journey/events` stream.

use std::{fmt, str::FromStr};

use groundzero_common::{journey::Stage, Action, Reason};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{labels::UnknownLabel, source::Source};

crate::labels::label_enum! {
    /// How a journey ended.
    pub enum Outcome as "outcome" {
        /// Dropped by the XDP program.
        XdpDrop => "xdp_drop",
        /// Read by an application.
        Delivered => "delivered",
        /// Freed after normal processing without an application read (a SYN, an ICMP echo...).
        Consumed => "consumed",
        /// Dropped by the kernel; the reason is in [`Journey::drop_reason`].
        KernelDrop => "kernel_drop",
        /// Seen in the stack, then lost from view before any end.
        Incomplete => "incomplete",
        /// Its data was appended to another skb and this one freed: TCP coalescing or IP
        /// fragment reassembly (`kfree_skb_partial`), or a GRO merge
        /// (`napi_skb_free_stolen_head`, `__napi_kfree_skb`); its bytes travel on in the other
        /// skb's journey.
        Merged => "merged",
    }
}

crate::labels::label_enum! {
    /// How a rate figure was obtained.
    pub enum RateBasis as "rate basis" {
        /// Counted by the XDP program, packet by packet.
        Counted => "counted",
        /// Estimated: a counted rate × the share of sampled journeys that reached the stage.
        Estimate => "estimate",
    }
}

crate::labels::label_enum! {
    /// How the entry that dropped a journey's packet was found.
    pub enum EntryResolution as "entry resolution" {
        /// An exact entry: the kernel's key is the packet's source address, carried in the
        /// drop event itself; its holder was read from the registry when the event arrived.
        KernelKey => "kernel_key",
        /// A prefix entry: the kernel cannot return the LPM key it matched, so the entry was
        /// looked up in the registry when the drop event arrived (not when the JSON was built).
        AtDrain => "at_drain",
    }
}

crate::labels::label_enum! {
    /// The two kinds of event on `GET /v1/journey/events` (`event:` of the stream).
    pub enum EventKind as "event" {
        /// A [`JourneySummary`], about once a second (and first, on connecting).
        Summary => "summary",
        /// A [`Journey`], as it ends.
        Journey => "journey",
    }
}

/// The stage of one hop of a journey: a kernel [`Stage`], or `xdp_verdict` (the XDP program
/// returned, with its verdict in the hop's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HopStage {
    /// Where the kernel saw the packet.
    At(Stage),
    /// The XDP program's return.
    XdpVerdict,
}

impl HopStage {
    /// The label of the verdict hop.
    pub const XDP_VERDICT: &'static str = "xdp_verdict";

    /// The string it travels as.
    pub const fn label(self) -> &'static str {
        match self {
            HopStage::At(stage) => stage.label(),
            HopStage::XdpVerdict => Self::XDP_VERDICT,
        }
    }
}

impl fmt::Display for HopStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for HopStage {
    type Err = UnknownLabel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::XDP_VERDICT {
            return Ok(HopStage::XdpVerdict);
        }
        crate::labels::parse_stage(s)
            .map(HopStage::At)
            .map_err(|_| {
                UnknownLabel::new(
                    "stage",
                    s,
                    Stage::ALL
                        .iter()
                        .map(|st| st.label())
                        .chain([Self::XDP_VERDICT]),
                )
            })
    }
}

impl Serialize for HopStage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

impl<'de> Deserialize<'de> for HopStage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::labels::deserialize_parsed(d)
    }
}

/// `PUT /v1/journey`: turn tracing on or off, change sampling. (Fields in the daemon's
/// declaration order: serde's "unknown field" message lists them.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingRequest {
    /// On or off.
    pub enabled: bool,
    /// Sample one packet in N (at least 1). None: keep the current rate (or the config's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_every: Option<u32>,
    /// Which packets: `tcp`, `udp`, `icmp`, `icmpv6`, `port N`, `src PREFIX`, `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A stage this kernel could not observe, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingStage {
    /// The kernel hook that could not be attached.
    pub hook: String,
    /// The stage it would have observed.
    #[serde(with = "crate::labels::stage")]
    pub stage: Stage,
    /// The kernel's error.
    pub why: String,
}

/// What tracing is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStatus {
    /// Tracing is on.
    pub enabled: bool,
    /// The filter as text (`any` when everything may be sampled).
    pub filter: String,
    /// One packet in this many is sampled.
    pub sample_every: u32,
    /// Stages this kernel cannot observe.
    pub stages_missing: Vec<MissingStage>,
}

/// The reply to `PUT /v1/journey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracingReply {
    /// Tracing as it is now.
    pub tracing: TraceStatus,
}

/// Packet rates over the last window. `seen`, `dropped` and `passed` (all traffic) and the
/// `filtered_*` rates (the packets the sample filter admits) are counted by the XDP program;
/// `stack`, `socket`, `app` and `kernel_dropped` are estimates for the *filtered* population
/// only: its counted passed rate × the share of sampled passed journeys that reached the stage
/// (each stage counted once per journey, so never above the passed rate); `null` for a stage
/// not observed (see [`JourneySummary::not_observed`]) or before any sampled journey passed.
/// The same figures, labelled, are in [`JourneySummary::stage_rates`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Reaching the application (estimate, filtered population; `null`: not observed).
    pub app_pps: Option<f64>,
    /// Dropped by XDP (counted, all traffic).
    pub dropped_pps: f64,
    /// Of the packets the sample filter admits: dropped by XDP (counted).
    pub filtered_dropped_pps: f64,
    /// Of the packets the sample filter admits: passed by XDP (counted).
    pub filtered_passed_pps: f64,
    /// Packets the sample filter admits, seen by XDP (counted).
    pub filtered_seen_pps: f64,
    /// Dropped by the kernel after XDP passed them (estimate, filtered population; `null`: not
    /// observed).
    pub kernel_dropped_pps: Option<f64>,
    /// Passed by XDP (counted, all traffic).
    pub passed_pps: f64,
    /// Seen by XDP (NIC → XDP; counted, all traffic).
    pub seen_pps: f64,
    /// Reaching a socket (estimate, filtered population; `null`: not observed).
    pub socket_pps: Option<f64>,
    /// Reaching the stack (estimate, filtered population; `null`: not observed).
    pub stack_pps: Option<f64>,
    /// The window, in seconds.
    pub window_s: f64,
}

/// Packets the XDP program counted, as of the last reading: all traffic since the program was
/// loaded; the `filtered_*` ones (the packets the sample filter admitted, whichever filter was
/// current) since tracing first started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Dropped.
    pub dropped: u64,
    /// Admitted by the sample filter and dropped.
    pub filtered_dropped: u64,
    /// Admitted by the sample filter and passed.
    pub filtered_passed: u64,
    /// Admitted by the sample filter.
    pub filtered_seen: u64,
    /// Passed.
    pub passed: u64,
    /// Seen.
    pub seen: u64,
}

/// p50 and p99 over the most recent samples (4096) of one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Samples seen since tracing started.
    pub count: u64,
    /// What the stage is, for people (`XDP verdict`, `to socket queue`, ...).
    pub label: String,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// The stage.
    #[serde(with = "crate::labels::stage")]
    pub stage: Stage,
}

/// Journeys by how they ended, and how many stage events matched no journey.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// See [`Outcome::Consumed`].
    pub consumed: u64,
    /// See [`Outcome::Delivered`].
    pub delivered: u64,
    /// See [`Outcome::Incomplete`].
    pub incomplete: u64,
    /// See [`Outcome::KernelDrop`].
    pub kernel_drop: u64,
    /// See [`Outcome::Merged`].
    pub merged: u64,
    /// Stage events of no known journey (broken down in [`MatchCounts`]).
    pub unmatched: u64,
    /// See [`Outcome::XdpDrop`].
    pub xdp_drop: u64,
}

impl Outcomes {
    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::XdpDrop => self.xdp_drop,
            Outcome::Delivered => self.delivered,
            Outcome::Consumed => self.consumed,
            Outcome::KernelDrop => self.kernel_drop,
            Outcome::Incomplete => self.incomplete,
            Outcome::Merged => self.merged,
        }
    }

    /// Sets the count of one outcome.
    pub fn set(&mut self, outcome: Outcome, n: u64) {
        *match outcome {
            Outcome::XdpDrop => &mut self.xdp_drop,
            Outcome::Delivered => &mut self.delivered,
            Outcome::Consumed => &mut self.consumed,
            Outcome::KernelDrop => &mut self.kernel_drop,
            Outcome::Incomplete => &mut self.incomplete,
            Outcome::Merged => &mut self.merged,
        } = n;
    }
}

/// Counts of what could not be matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchCounts {
    /// Stage events after their journey had ended: normal, not an error.
    pub after_end: u64,
    /// A stage seen again within one journey (TCP at `ip_protocol_deliver_rcu`, then
    /// `tcp_probe`): only its first occurrence counts.
    pub repeated: u64,
    /// Stage events whose XDP start was never seen (ring buffer full, tracing restarted).
    pub unknown_id: u64,
    /// Passed at XDP but never seen by `netif_receive_skb`.
    pub unseen_in_stack: u64,
}

/// How often the kernel dropped sampled packets for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDropCount {
    /// Journeys dropped for it.
    pub count: u64,
    /// The kernel's name for it (`NO_SOCKET`, ...; from its BTF).
    pub reason: String,
}

/// What groundzero costs this host over the last window, from the kernel's run-time
/// statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// CPU time of the journey observers per second of wall time (ms/s; 1000 is one CPU).
    pub observers_cpu_ms_per_s: f64,
    /// Their mean time per run; `null` when they did not run.
    pub observers_ns_per_run: Option<f64>,
    /// Observer runs per second (they run for every skb at their hooks, sampled or not).
    pub observers_runs_per_s: f64,
    /// The window, in seconds.
    pub window_s: f64,
    /// Mean run of the XDP program; `null` when no packet arrived.
    pub xdp_ns_per_packet: Option<f64>,
}

/// Kernel drops of sampled packets at one kernel function for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSite {
    /// Journeys dropped there for it.
    pub count: u64,
    /// The function that freed the skb (from `/proc/kallsyms`; the address in hex when no
    /// symbol covers it).
    pub function: String,
    /// The kernel's name for the reason (`NO_SOCKET`, ...).
    pub reason: String,
}

/// A stage that shows no figure, and why: nothing is drawn for it as if measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotObserved {
    /// The stage.
    #[serde(with = "crate::labels::stage")]
    pub stage: Stage,
    /// Why it has no measurement (hook missing on this kernel, not on this path in generic
    /// XDP mode, or no sampled journey reached it yet).
    pub why: String,
}

/// Whether a stage outside the observers' reach is measured, and if not, why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observability {
    /// The stage is measured (its figures are in `stages`).
    pub measured: bool,
    /// Why it is not measured; `null` when it is.
    pub why: Option<String>,
}

/// One stage's rate, labelled with how it was obtained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRate {
    /// Counted by XDP, or estimated from sampled journeys.
    pub basis: RateBasis,
    /// Which packets: `all traffic`, or `packets matching "<filter>"`.
    pub population: String,
    /// Packets per second reaching the stage.
    pub pps: f64,
    /// Of the last 1024 sampled passed journeys under the current filter (those never seen after
    /// XDP included), the share that reached the stage (0..=1); `null` for
    /// counted rates.
    pub share: Option<f64>,
    /// The stage (`xdp` for the packets XDP saw).
    #[serde(with = "crate::labels::stage")]
    pub stage: Stage,
}

/// The XDP verdict timed whole: the sampled span beside the kernel's own mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictTiming {
    /// The kernel's run-time mean of the XDP program over the last window (BPF_ENABLE_STATS
    /// `run_time_ns / run_cnt`, every packet, sampled or not); `null` when no packet ran it.
    pub kernel_mean_ns: Option<f64>,
    /// Median of the sampled span over the last 4096 sampled verdicts, dropped and passed
    /// packets together (a passed packet's span also covers tagging it), ns; `null` without
    /// samples.
    pub p50_ns: Option<u64>,
    /// 99th percentile of the same mix of dropped and passed spans, ns; `null` without samples.
    pub p99_ns: Option<u64>,
    /// Sampled verdicts measured since the daemon started (the statistics survive stopping and
    /// restarting tracing).
    pub samples: u64,
    /// What the sampled span covers, in words.
    pub span: String,
}

/// The reply to `GET /v1/journey`, and the `summary` event of the stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneySummary {
    /// `null` until two readings exist.
    pub cost: Option<Cost>,
    /// Per stage, the time since the XDP hook.
    pub cumulative: Vec<StageLatency>,
    /// Kernel drops of sampled packets by the function that freed them and the reason.
    pub drop_sites: Vec<DropSite>,
    /// Journeys not streamed to live viewers (at most 50/s are; statistics include all).
    pub journeys_skipped: u64,
    /// Kernel drops of sampled packets, by reason.
    pub kernel_drop_reasons: Vec<KernelDropCount>,
    /// What could not be matched.
    pub matching: MatchCounts,
    /// NIC → XDP (the RX hardware timestamp): not measured by groundzero (the kfunc needs a
    /// device-bound program, which aya 0.14 cannot load); `why` says so.
    pub nic_to_xdp: Observability,
    /// Stages on a journey's path that have no measurement, and why (shown as "not observed",
    /// never as a figure).
    pub not_observed: Vec<NotObserved>,
    /// Journeys by outcome.
    pub outcomes: Outcomes,
    /// Packet rates.
    pub rates: Rates,
    /// Each stage's rate with its basis (counted or estimate) and population.
    pub stage_rates: Vec<StageRate>,
    /// Per stage, the time from the hop before it.
    pub stages: Vec<StageLatency>,
    /// Packet totals.
    pub totals: Totals,
    /// Tracing's state.
    pub tracing: TraceStatus,
    /// The XDP verdict timed whole, beside the kernel's mean; `null` before any reading.
    pub verdict: Option<VerdictTiming>,
}

/// One minute of stage percentiles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMinute {
    /// Journeys that started (reached the XDP hook) in the minute.
    pub journeys: u64,
    /// Per stage, the time from the hop before it, over the minute's journeys.
    pub stages: Vec<StageLatency>,
    /// The minute's start, Unix seconds.
    pub start_unix: u64,
}

/// The reply to `GET /v1/journey/history`: per-minute stage percentiles kept by the daemon, by
/// the minute each journey started: the current minute and the 59 before it (those with
/// journeys), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    /// Oldest first.
    pub minutes: Vec<HistoryMinute>,
}

impl JourneySummary {
    /// The cumulative latency of `stage`, if it was measured.
    pub fn cumulative_at(&self, stage: Stage) -> Option<&StageLatency> {
        self.cumulative.iter().find(|c| c.stage == stage)
    }
}

/// One point of a journey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The CPU the kernel observed it on (`bpf_get_smp_processor_id`).
    pub cpu: u32,
    /// Where in the kernel this was observed (a kernel function for drops and frees).
    pub label: String,
    /// The stage.
    pub stage: HopStage,
    /// Time since the XDP hook, ns.
    pub t_ns: u64,
}

/// The list entry that dropped a journey's packet, and its first holder: recorded with the
/// journey when its drop event was drained (see [`EntryResolution`]), so a later change to the
/// lists does not rewrite the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidingEntry {
    /// The entry.
    pub entry: IpNet,
    /// When its first holder's hold expires (Unix seconds).
    pub expires_unix: Option<u64>,
    /// Its first holder's reason.
    pub reason: Option<String>,
    /// How the entry was found: the kernel's own key, or a registry lookup at drain time.
    pub resolved: EntryResolution,
    /// When it was recorded (the drop event drained), Unix ms.
    pub resolved_unix_ms: u64,
    /// Its first holder.
    pub source: Option<Source>,
}

/// A sampled packet's path, measured: an element of `GET /v1/journey/recent` and the
/// `journey` event of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journey {
    /// The kernel's name for the drop reason, for [`Outcome::KernelDrop`].
    pub drop_reason: Option<String>,
    /// Destination, `addr:port`, `[addr]:port` or `addr` (no port).
    pub dst: String,
    /// The list entry that dropped it, for XDP drops decided by one.
    pub entry: Option<DecidingEntry>,
    /// The IP version (4 or 6).
    pub family: u8,
    /// Its hops, in order.
    pub hops: Vec<Hop>,
    /// The journey's id (per daemon run).
    pub id: u32,
    /// The interface's name (or `ifindex N`).
    pub interface: String,
    /// How it ended.
    pub outcome: Outcome,
    /// `udp`, `tcp`, `icmp`, `icmpv6` or the protocol number.
    pub protocol: String,
    /// The XDP program's counter reason.
    #[serde(with = "crate::labels::reason")]
    pub reason: Reason,
    /// Source, like `dst`.
    pub src: String,
    /// Time from the XDP hook to the last hop, ns.
    pub total_ns: u64,
    /// Wall-clock time of the XDP hook, Unix ms.
    pub unix_ms: u64,
    /// The XDP verdict.
    #[serde(with = "crate::labels::action")]
    pub verdict: Action,
}

/// The query of `GET /v1/journey/recent`. (Fields in the daemon's declaration order.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentQuery {
    /// At most this many (the daemon keeps 512).
    #[serde(default = "RecentQuery::default_limit")]
    pub limit: usize,
    /// Only journeys with this outcome. Text: the daemon answers an unknown one with the
    /// message of [`Outcome`]'s `FromStr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl RecentQuery {
    /// The limit when the query names none.
    pub const DEFAULT_LIMIT: usize = 50;

    fn default_limit() -> usize {
        Self::DEFAULT_LIMIT
    }

    /// The request path with this query.
    pub fn path(&self) -> String {
        let mut path = format!("{}?limit={}", crate::endpoints::JOURNEY_RECENT, self.limit);
        if let Some(outcome) = &self.outcome {
            path.push_str(&format!("&outcome={outcome}"));
        }
        path
    }
}

impl Default for RecentQuery {
    fn default() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            outcome: None,
        }
    }
}

/// The reply to `GET /v1/journey/recent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentReply {
    /// Newest first.
    pub journeys: Vec<Journey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_errors_read_as_the_daemon_wrote_them() {
        let e = "lost".parse::<Outcome>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown outcome `lost` (xdp_drop, delivered, consumed, kernel_drop, incomplete, merged)"
        );
    }

    #[test]
    fn hop_stages_cover_the_kernel_stages_and_the_verdict() {
        for s in Stage::ALL {
            assert_eq!(s.label().parse::<HopStage>(), Ok(HopStage::At(s)));
        }
        assert_eq!("xdp_verdict".parse::<HopStage>(), Ok(HopStage::XdpVerdict));
        assert!("nowhere".parse::<HopStage>().is_err());
    }
}
