//! `groundzero journey --compare`: the journey's A/B as text (run A with XDP, run B without,
//! side by side, every figure labelled), and the claims table `groundzero journey` prints.
use std::fmt::Write;

use groundzero::text::for_terminal;
use groundzero_api::{
    journey_ab::{AbReport, AbStage, Estimate},
    journey_claims::ClaimsReply,
};

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1e3)
}

/// A bound the samples cannot give (too few for that percentile) reads `?`.
fn bound(ns: Option<f64>) -> String {
    ns.map_or_else(|| "?".into(), us)
}

fn estimate(e: &Estimate) -> String {
    format!("{} [{} – {}]", us(e.ns), bound(e.lo_ns), bound(e.hi_ns))
}

/// Do the two intervals overlap? An unknown bound is open on its side, so it may overlap.
fn overlap(a: &Estimate, b: &Estimate) -> bool {
    let (a_lo, a_hi) = (
        a.lo_ns.unwrap_or(f64::NEG_INFINITY),
        a.hi_ns.unwrap_or(f64::INFINITY),
    );
    let (b_lo, b_hi) = (
        b.lo_ns.unwrap_or(f64::NEG_INFINITY),
        b.hi_ns.unwrap_or(f64::INFINITY),
    );
    a_lo <= b_hi && b_lo <= a_hi
}

fn ns_or(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |ns| format!("{ns:.0} ns"))
}

/// The A/B report, run A and run B side by side.
pub fn text(r: &AbReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "journey A/B on {} (load {}), measured by `groundzero journey --compare`",
        for_terminal(&r.interface),
        for_terminal(&r.load)
    );
    let _ = writeln!(out, "  intervals: {}", for_terminal(&r.ci_method));
    for run in &r.runs {
        let _ = writeln!(
            out,
            "\nrun {}: {} — {} of {} probes measured",
            if run.xdp_attached { "A" } else { "B" },
            for_terminal(&run.label),
            run.probes_measured,
            run.probes_sent
        );
        for s in &run.stages {
            let _ = writeln!(
                out,
                "  {:<22} p50 {}   p99 {}",
                for_terminal(&s.label),
                estimate(&s.p50),
                estimate(&s.p99)
            );
        }
        let _ = writeln!(
            out,
            "  CPU per packet, receiving side: {}",
            ns_or(run.cpu_ns_per_packet)
        );
    }
    if let (Some(a), Some(b)) = (r.run(true), r.run(false)) {
        let _ = writeln!(
            out,
            "\nwith XDP − without XDP, p50 (\"within noise\": the runs' 95% intervals overlap, \
             so the difference is not shown to be real):"
        );
        for name in [
            AbStage::WIRE_TO_STACK,
            AbStage::STACK_TO_APP,
            AbStage::END_TO_END,
        ] {
            if let (Some(x), Some(y)) = (a.stage(name), b.stage(name)) {
                let _ = writeln!(
                    out,
                    "  {:<22} {:+.1} µs{}",
                    for_terminal(&x.label),
                    (x.p50.ns - y.p50.ns) / 1e3,
                    if overlap(&x.p50, &y.p50) {
                        "  (within noise)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    let _ = writeln!(out, "\nwhat a blocked packet costs the node:");
    for d in &r.blocked {
        let _ = writeln!(
            out,
            "  {:<70} {} per packet ({} packets)",
            for_terminal(&d.label),
            ns_or(d.cpu_ns_per_packet),
            d.packets
        );
    }
    let mut hows: Vec<&str> = r
        .runs
        .iter()
        .flat_map(|run| run.stages.iter().map(|s| s.how.as_str()))
        .chain(r.runs.iter().map(|run| run.cpu_how.as_str()))
        .chain(r.blocked.iter().map(|d| d.how.as_str()))
        .collect();
    hows.dedup();
    hows.sort_unstable();
    hows.dedup();
    let _ = writeln!(out, "\nhow each figure is measured:");
    for how in hows {
        let _ = writeln!(out, "  - {}", for_terminal(how));
    }
    out
}

/// The claims beside this host's measurements.
pub fn claims_text(c: &ClaimsReply) -> String {
    let mut out = String::from("\nclaims, measured on this host:\n");
    for claim in &c.claims {
        let measured = claim
            .measured_ns
            .map_or_else(|| "not measured yet".into(), us);
        let holds = match claim.holds {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "-",
        };
        let _ = writeln!(
            out,
            "  {:<42} {:>16}  {:<14} {}",
            for_terminal(&claim.claim),
            measured,
            holds,
            for_terminal(&claim.note)
        );
        let _ = writeln!(out, "  {:<42} {}", "", for_terminal(&claim.from));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero_api::sample::Sample;

    #[test]
    fn both_runs_and_every_label_are_printed() {
        let r = AbReport::sample();
        let t = text(&r);
        assert!(t.contains("run A: with XDP (attached, native)"), "{t}");
        assert!(t.contains("run B: without XDP (detached)"), "{t}");
        assert!(t.contains("wire → stack"), "{t}");
        assert!(t.contains("nftables drop rule"), "{t}");
        assert!(t.contains("order-statistic"), "{t}");
        // Sub-µs values keep their decimal: 0.3 µs, not 1 µs.
        assert_eq!(us(310.0), "0.3 µs");
    }

    #[test]
    fn a_difference_inside_overlapping_intervals_is_flagged() {
        let e = |ns: f64, lo: Option<f64>, hi: Option<f64>| Estimate {
            hi_ns: hi,
            lo_ns: lo,
            ns,
        };
        assert!(overlap(
            &e(5.0, Some(4.0), Some(6.0)),
            &e(6.5, Some(5.5), Some(7.0))
        ));
        assert!(!overlap(
            &e(5.0, Some(4.0), Some(6.0)),
            &e(8.0, Some(7.0), Some(9.0))
        ));
        // An interval with no upper bound reaches any value above it.
        assert!(overlap(
            &e(5.0, Some(4.0), None),
            &e(80.0, Some(70.0), Some(90.0))
        ));
        let mut r = AbReport::sample();
        // Tight intervals far apart: a real difference, no flag.
        for run in &mut r.runs {
            let at = if run.xdp_attached { 5_000.0 } else { 8_000.0 };
            for s in &mut run.stages {
                s.p50 = e(at, Some(at - 100.0), Some(at + 100.0));
            }
        }
        let t = text(&r);
        assert!(t.contains("-3.0 µs\n"), "{t}");
        assert!(!t.contains("µs  (within noise)"), "{t}");
        for run in &mut r.runs {
            for s in &mut run.stages {
                s.p50 = e(s.p50.ns, None, None);
            }
        }
        let t = text(&r);
        assert!(t.contains("µs  (within noise)"), "{t}");
        assert!(t.contains("[? – ?]"), "{t}");
    }

    #[test]
    fn unmeasured_claims_say_so() {
        let c = ClaimsReply {
            claims: groundzero_api::journey_claims::claims(&Default::default(), None),
        };
        let t = claims_text(&c);
        for claim in &c.claims {
            let line = t.lines().find(|l| l.contains(&claim.claim)).unwrap();
            assert!(line.contains("not measured yet"), "{line}");
        }
        assert!(!t.contains(" holds "), "{t}");
    }
}
