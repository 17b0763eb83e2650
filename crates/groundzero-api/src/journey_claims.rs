//! The project's claims beside what this host measured (`GET /v1/journey/claims`), computed once
//! here so the page and `groundzero journey` show the same verdicts.
//!
//! Each claim names the measurement it is checked against. Without one it reads "not measured
//! yet" (`measured_ns` and `holds` are `None`): a claim is never shown as holding on no data.

use groundzero_common::journey::Stage;
use serde::{Deserialize, Serialize};

use crate::{
    journey::JourneySummary,
    journey_ab::{AbReport, AbStage, DropCost},
};

/// `GET /v1/journey/claims`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimsReply {
    /// Every claim, in a fixed order.
    pub claims: Vec<Claim>,
}

/// One claim and the measurement it is held against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The claim as it is made ("fiber to application in 6 µs").
    pub claim: String,
    /// Which measurement (endpoint, field, method) the value comes from, or what would measure it.
    pub from: String,
    /// Whether the measured value is within the claim; `None` when not measured yet.
    pub holds: Option<bool>,
    /// The measured value, ns; `None` when not measured yet.
    pub measured_ns: Option<f64>,
    /// `fiber_to_app`, `xdp_drop`, `xdp_pass_to_app`, `hash_lookup`.
    pub name: String,
    /// How the claim is read (the bound it is held to) and what the measurement says.
    pub note: String,
}

/// What a claim is checked against: inclusive bounds in ns.
struct Bound {
    lo: f64,
    hi: f64,
    reading: &'static str,
}

/// What a measurement says of the claimed quantity: the quantity itself, or only a bound on it
/// (it covers part of the path, or more than the claimed step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measured {
    /// The quantity itself: judged both ways.
    Value,
    /// The quantity is at least this (part of the path): can only show it too slow, or hold
    /// a claim with no upper limit.
    LowerBound,
    /// The quantity is at most this (a wider span): can only hold a claim that starts at 0,
    /// or show it too fast.
    UpperBound,
}

/// What was found: the value, what it is of the claimed quantity, and where it comes from.
struct Found {
    ns: f64,
    measured: Measured,
    from: String,
}

/// The verdict of `ns` (read as `measured`) against `bound`: `None` when a bound cannot
/// decide, with why.
fn verdict(ns: f64, measured: Measured, bound: &Bound) -> (Option<bool>, String) {
    let within = ns >= bound.lo && ns <= bound.hi;
    let out_of = |ns: f64| {
        if ns < bound.lo {
            "does not hold: faster than claimed"
        } else {
            "does not hold: slower than claimed"
        }
    };
    match measured {
        Measured::Value if within => (Some(true), "holds".into()),
        Measured::Value => (Some(false), out_of(ns).into()),
        // The true value is ≥ ns.
        Measured::LowerBound if ns > bound.hi => (Some(false), out_of(ns).into()),
        Measured::LowerBound if ns >= bound.lo && bound.hi == f64::INFINITY => {
            (Some(true), "holds".into())
        }
        Measured::LowerBound => (
            None,
            "undecided: this is a lower bound (part of the path), it can only show the claim \
             too slow"
                .into(),
        ),
        // The true value is ≤ ns.
        Measured::UpperBound if ns < bound.lo => (Some(false), out_of(ns).into()),
        Measured::UpperBound if ns <= bound.hi && bound.lo <= 0.0 => (Some(true), "holds".into()),
        Measured::UpperBound => (
            None,
            "undecided: this is an upper bound (a wider span), it can only confirm the claim \
             when within it"
                .into(),
        ),
    }
}

fn judge(name: &str, claim: &str, bound: Bound, found: Option<Found>, missing: &str) -> Claim {
    match found {
        Some(Found { ns, measured, from }) => {
            let (holds, how) = verdict(ns, measured, &bound);
            Claim {
                claim: claim.into(),
                from,
                holds,
                measured_ns: Some(ns),
                name: name.into(),
                note: format!("{how} (read as {})", bound.reading),
            }
        }
        None => Claim {
            claim: claim.into(),
            from: format!("to measure it: {missing}"),
            holds: None,
            measured_ns: None,
            name: name.into(),
            note: format!("not measured yet (read as {})", bound.reading),
        },
    }
}

fn stage_p50(list: &[crate::journey::StageLatency], stage: Stage) -> Option<f64> {
    list.iter()
        .find(|s| s.stage == stage && s.count > 0)
        .map(|s| s.p50_ns as f64)
}

/// The claims, held against the journey summary and the last A/B (if any).
pub fn claims(summary: &JourneySummary, ab: Option<&AbReport>) -> Vec<Claim> {
    let with_xdp = ab.and_then(|a| a.run(true));
    let fiber = with_xdp
        .and_then(|r| r.stage(AbStage::END_TO_END))
        .filter(|s| s.count > 0)
        .map(|s| Found {
            ns: s.p50.ns,
            measured: Measured::Value,
            from: "A/B run A (XDP attached): end_to_end p50, sender's software TX stamp to the \
                   application's read, UDP probes over the lab's veths"
                .to_string(),
        })
        .or_else(|| {
            // From XDP's entry on: the fiber and the NIC before it are not in it.
            stage_p50(&summary.cumulative, Stage::App).map(|ns| Found {
                ns,
                measured: Measured::LowerBound,
                from: "GET /v1/journey cumulative[app].p50_ns: XDP program entry to the \
                       application's read, sampled journeys (a lower bound: NIC → XDP is not \
                       in it)"
                    .to_string(),
            })
        });
    // Only a measured drop: the kernel's mean over every verdict is mostly passed packets, so
    // it says nothing of what a dropped one costs.
    let drop = ab
        .and_then(|a| a.blocked.iter().find(|d| d.name == DropCost::XDP_DROP))
        .and_then(|d| d.cpu_ns_per_packet.map(|ns| (ns, d)))
        .map(|(ns, d)| Found {
            ns,
            measured: Measured::Value,
            from: format!(
                "A/B blocked[xdp_drop].cpu_ns_per_packet: {} ({} packets)",
                d.how, d.packets
            ),
        });
    let pass = stage_p50(&summary.cumulative, Stage::App).map(|ns| Found {
        ns,
        measured: Measured::Value,
        from: "GET /v1/journey cumulative[app].p50_ns: XDP program entry to the application's \
               read, sampled journeys that passed"
            .to_string(),
    });
    let lookup = summary
        .verdict
        .as_ref()
        .filter(|v| v.samples > 0)
        .and_then(|v| v.p50_ns)
        .map(|ns| Found {
            ns: ns as f64,
            measured: Measured::UpperBound,
            from: "GET /v1/journey verdict.p50_ns: the whole XDP verdict (program entry to the \
                   ring write), sampled packets; an upper bound on one hash lookup"
                .to_string(),
        })
        .or_else(|| {
            stage_p50(&summary.stages, Stage::Xdp).map(|ns| Found {
                ns,
                measured: Measured::UpperBound,
                from: "GET /v1/journey stages[xdp].p50_ns: the XDP verdict step (lookups and \
                       counters), sampled journeys; an upper bound on one hash lookup"
                    .to_string(),
            })
        });
    vec![
        judge(
            "fiber_to_app",
            "fiber to application in 6 µs",
            Bound {
                lo: 0.0,
                hi: 6_000.0,
                reading: "a median of at most 6 µs",
            },
            fiber,
            "run the A/B, or trace journeys that reach an application",
        ),
        judge(
            "xdp_drop",
            "XDP_DROP ~1 µs",
            Bound {
                lo: 0.0,
                hi: 2_000.0,
                reading: "at most 2 µs per dropped packet",
            },
            drop,
            "run the A/B (its XDP drop cost)",
        ),
        judge(
            "xdp_pass_to_app",
            "XDP_PASS to the application ~50-100 µs",
            Bound {
                lo: 50_000.0,
                hi: 100_000.0,
                reading: "a median between 50 and 100 µs",
            },
            pass,
            "trace journeys that reach an application",
        ),
        judge(
            "hash_lookup",
            "hash lookup in nanoseconds",
            Bound {
                lo: 0.0,
                hi: 999.0,
                reading: "a median verdict under 1 µs",
            },
            lookup,
            "trace journeys (the XDP verdict step)",
        ),
    ]
}

impl crate::sample::Sample for ClaimsReply {
    fn sample() -> Self {
        ClaimsReply {
            claims: claims(&JourneySummary::sample(), Some(&AbReport::sample())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::StageLatency;
    use crate::journey_ab::{AbRun, Estimate};

    fn lat(stage: Stage, p50: u64) -> StageLatency {
        StageLatency {
            count: 10,
            label: stage.label().into(),
            p50_ns: p50,
            p99_ns: p50 * 2,
            stage,
        }
    }

    fn est(ns: f64) -> Estimate {
        Estimate {
            hi_ns: Some(ns),
            lo_ns: Some(ns),
            ns,
        }
    }

    #[test]
    fn nothing_measured_reads_not_measured_yet() {
        let c = claims(&JourneySummary::default(), None);
        assert_eq!(c.len(), 4);
        for claim in &c {
            assert_eq!(claim.holds, None, "{}", claim.name);
            assert_eq!(claim.measured_ns, None, "{}", claim.name);
            assert!(claim.note.starts_with("not measured yet"), "{}", claim.note);
            assert!(claim.from.starts_with("to measure it"), "{}", claim.from);
        }
    }

    #[test]
    fn journey_summary_values_are_held_to_their_bounds() {
        let summary = JourneySummary {
            stages: vec![lat(Stage::Xdp, 120)],
            cumulative: vec![lat(Stage::App, 30_000)],
            ..JourneySummary::default()
        };
        let c = claims(&summary, None);
        let by = |n: &str| c.iter().find(|c| c.name == n).unwrap();
        assert_eq!(by("hash_lookup").holds, Some(true));
        assert_eq!(by("hash_lookup").measured_ns, Some(120.0));
        // 30 µs is faster than "50-100 µs": the claim does not hold, and says why.
        assert_eq!(by("xdp_pass_to_app").holds, Some(false));
        assert!(by("xdp_pass_to_app").note.contains("faster"));
        // Fiber to app falls back on the journey's cumulative time when no A/B ran.
        assert_eq!(by("fiber_to_app").measured_ns, Some(30_000.0));
        assert_eq!(by("fiber_to_app").holds, Some(false));
        assert!(by("fiber_to_app").from.contains("cumulative[app]"));
        assert_eq!(by("xdp_drop").holds, None);
        // Without an A/B the drop is not measured: the kernel's mean over every verdict (mostly
        // passed packets) is no drop cost.
        let summary = JourneySummary {
            verdict: Some(crate::journey::VerdictTiming {
                kernel_mean_ns: Some(640.0),
                ..Default::default()
            }),
            cost: Some(crate::journey::Cost {
                xdp_ns_per_packet: Some(640.0),
                ..Default::default()
            }),
            ..JourneySummary::default()
        };
        let drop = claims(&summary, None).remove(1);
        assert_eq!(drop.name, "xdp_drop");
        assert_eq!((drop.measured_ns, drop.holds), (None, None));
        assert!(drop.note.starts_with("not measured yet"), "{}", drop.note);
    }

    #[test]
    fn a_lower_bound_only_disproves_and_an_upper_bound_only_confirms() {
        let bound = Bound {
            lo: 0.0,
            hi: 6_000.0,
            reading: "",
        };
        // Lower bound (part of the path): 3 µs leaves the whole under or over 6 µs.
        assert_eq!(verdict(3_000.0, Measured::LowerBound, &bound).0, None);
        assert_eq!(
            verdict(7_000.0, Measured::LowerBound, &bound).0,
            Some(false)
        );
        // Upper bound (a wider span): under 6 µs the claim holds; over it, nothing is known.
        assert_eq!(verdict(3_000.0, Measured::UpperBound, &bound).0, Some(true));
        assert_eq!(verdict(7_000.0, Measured::UpperBound, &bound).0, None);
        // A claimed range 50-100 µs: an upper bound within cannot confirm it (the true value
        // may be under 50 µs), one below 50 µs disproves it; a lower bound above 100 µs too.
        let range = Bound {
            lo: 50_000.0,
            hi: 100_000.0,
            reading: "",
        };
        assert_eq!(verdict(70_000.0, Measured::UpperBound, &range).0, None);
        assert_eq!(
            verdict(40_000.0, Measured::UpperBound, &range).0,
            Some(false)
        );
        assert_eq!(verdict(70_000.0, Measured::LowerBound, &range).0, None);
        assert_eq!(
            verdict(120_000.0, Measured::LowerBound, &range).0,
            Some(false)
        );
        // A value is judged both ways.
        assert_eq!(verdict(70_000.0, Measured::Value, &range).0, Some(true));
        assert_eq!(verdict(40_000.0, Measured::Value, &range).0, Some(false));
    }

    #[test]
    fn the_journeys_partial_fiber_time_leaves_the_claim_undecided() {
        // 3 µs from XDP to the application: the fiber and NIC before XDP are not in it.
        let summary = JourneySummary {
            cumulative: vec![lat(Stage::App, 3_000)],
            stages: vec![lat(Stage::Xdp, 1_500)],
            ..JourneySummary::default()
        };
        let c = claims(&summary, None);
        let by = |n: &str| c.iter().find(|c| c.name == n).unwrap();
        assert_eq!(by("fiber_to_app").measured_ns, Some(3_000.0));
        assert_eq!(by("fiber_to_app").holds, None);
        assert!(by("fiber_to_app").note.starts_with("undecided"));
        // 1.5 µs for the whole verdict step says nothing of one lookup being under 1 µs.
        assert_eq!(by("hash_lookup").holds, None);
    }

    #[test]
    fn a_stage_without_samples_is_not_a_measurement() {
        let mut empty = lat(Stage::Xdp, 0);
        empty.count = 0;
        let summary = JourneySummary {
            stages: vec![empty],
            ..JourneySummary::default()
        };
        let c = claims(&summary, None);
        assert_eq!(
            c.iter().find(|c| c.name == "hash_lookup").unwrap().holds,
            None
        );
    }

    #[test]
    fn the_ab_is_preferred_for_fiber_and_drop() {
        let stage = AbStage {
            count: 100,
            how: String::new(),
            label: String::new(),
            name: AbStage::END_TO_END.into(),
            p50: est(5_000.0),
            p99: est(9_000.0),
        };
        let ab = AbReport {
            blocked: vec![DropCost {
                cpu_ns_per_packet: Some(2_500.0),
                how: "napi thread".into(),
                label: String::new(),
                name: DropCost::XDP_DROP.into(),
                packets: 1000,
            }],
            ci_method: String::new(),
            interface: "gzl-node".into(),
            load: String::new(),
            runs: vec![AbRun {
                cpu_ns_per_packet: None,
                cpu_how: String::new(),
                label: String::new(),
                probes_measured: 100,
                probes_sent: 100,
                stages: vec![stage],
                xdp_attached: true,
            }],
            unix_ms: 0,
        };
        let summary = JourneySummary {
            cumulative: vec![lat(Stage::App, 30_000)],
            ..JourneySummary::default()
        };
        let c = claims(&summary, Some(&ab));
        let by = |n: &str| c.iter().find(|c| c.name == n).unwrap();
        assert_eq!(by("fiber_to_app").measured_ns, Some(5_000.0));
        assert_eq!(by("fiber_to_app").holds, Some(true));
        assert!(by("fiber_to_app").from.starts_with("A/B run A"));
        assert_eq!(by("xdp_drop").measured_ns, Some(2_500.0));
        assert_eq!(by("xdp_drop").holds, Some(false));
        assert!(by("xdp_drop").note.contains("slower"));
    }
}
