//! `groundzero journey`: the measured journey in the terminal, or as Mermaid for docs.
use std::fmt::Write;

use groundzero::text::for_terminal;
use groundzero_api::{
    journey::{HopStage, JourneySummary, RecentReply},
    Stage,
};

// Every string in the daemon's answer is printed through `for_terminal`: labels and addresses
// are the daemon's own today, but a renderer should not trust that to stay true.

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn pps(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M pps", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k pps", x / 1e3)
    } else {
        format!("{x:.0} pps")
    }
}

/// Per-stage summary and recent journeys, as text.
pub fn text(summary: &JourneySummary, recent: &RecentReply) -> String {
    let mut out = String::new();
    let t = &summary.tracing;
    if !t.enabled {
        out.push_str(
            "journey tracing is off: turn it on with `groundzero journey --enable` \
             or [journey] enabled = true\n\n",
        );
    } else {
        let _ = writeln!(
            out,
            "sampling 1 in {} packets ({})",
            t.sample_every,
            for_terminal(&t.filter)
        );
    }
    for m in &t.stages_missing {
        let _ = writeln!(
            out,
            "  not observable here: {} at {} ({})",
            m.stage.label(),
            for_terminal(&m.hook),
            for_terminal(&m.why)
        );
    }
    if let Some(c) = &summary.cost {
        let ns = |v: Option<f64>| match v {
            Some(x) => format!("{x:.0} ns"),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "  cost here: XDP program {} per packet; tracing observers {:.1} ms CPU/s ({:.0} runs/s, {} each)",
            ns(c.xdp_ns_per_packet),
            c.observers_cpu_ms_per_s,
            c.observers_runs_per_s,
            ns(c.observers_ns_per_run),
        );
    }
    if let Some(v) = &summary.verdict {
        let sampled = match (v.p50_ns, v.p99_ns) {
            (Some(p50), Some(p99)) => format!(
                "p50 {} p99 {} over {} sampled packets",
                us(p50 as f64),
                us(p99 as f64),
                v.samples
            ),
            _ => "no sampled packet yet".to_string(),
        };
        let kernel = match v.kernel_mean_ns {
            Some(ns) => format!("{ns:.0} ns per packet (kernel run-time mean, every packet)"),
            None => "not measured (no packet in the last window)".to_string(),
        };
        let _ = writeln!(
            out,
            "  XDP verdict ({}): {sampled}; {kernel}",
            for_terminal(&v.span)
        );
    }
    if !summary.nic_to_xdp.measured {
        let _ = writeln!(
            out,
            "  NIC → XDP: {}",
            for_terminal(summary.nic_to_xdp.why.as_deref().unwrap_or("not observed"))
        );
    }
    let r = &summary.rates;
    let _ = writeln!(
        out,
        "\nNIC → XDP {}   → DROP {}   → PASS {}   (counted, all traffic)",
        pps(r.seen_pps),
        pps(r.dropped_pps),
        pps(r.passed_pps),
    );
    for sr in &summary.stage_rates {
        let share = sr
            .share
            .map(|x| format!(", {:.1}% of sampled passed journeys", x * 100.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<12} {:>12}  {} ({}{share})",
            sr.stage.label(),
            pps(sr.pps),
            sr.basis,
            for_terminal(&sr.population),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:<26} {:>8} {:>11} {:>11} {:>14}",
        "stage", "", "samples", "p50", "p99", "since XDP p50"
    );
    for s in &summary.stages {
        let since = summary
            .cumulative_at(s.stage)
            .map(|c| us(c.p50_ns as f64))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<12} {:<26} {:>8} {:>11} {:>11} {:>14}",
            s.stage.label(),
            for_terminal(&s.label),
            s.count,
            us(s.p50_ns as f64),
            us(s.p99_ns as f64),
            since
        );
    }
    for n in &summary.not_observed {
        let _ = writeln!(
            out,
            "{:<12} not observed: {}",
            n.stage.label(),
            for_terminal(&n.why)
        );
    }
    let o = &summary.outcomes;
    let _ = writeln!(
        out,
        "\noutcomes: {} dropped in XDP, {} delivered, {} consumed, {} dropped by the kernel, {} merged into the previous segment, {} incomplete, {} unmatched",
        o.xdp_drop, o.delivered, o.consumed, o.kernel_drop, o.merged, o.incomplete, o.unmatched
    );
    for d in &summary.kernel_drop_reasons {
        let _ = writeln!(
            out,
            "  kernel drop {}: {}",
            for_terminal(&d.reason),
            d.count
        );
    }
    for d in &summary.drop_sites {
        let _ = writeln!(
            out,
            "  kernel drop in {} ({}): {}",
            for_terminal(&d.function),
            for_terminal(&d.reason),
            d.count
        );
    }
    if !recent.journeys.is_empty() {
        out.push_str("\nrecent journeys:\n");
    }
    for j in &recent.journeys {
        let hops: Vec<String> = j
            .hops
            .iter()
            .filter(|h| h.stage != HopStage::At(Stage::Xdp))
            .map(|h| format!("{} +{}", h.stage, us(h.t_ns as f64)))
            .collect();
        let entry = j
            .entry
            .as_ref()
            .map(|e| format!(" [entry {}]", e.entry))
            .unwrap_or_default();
        let reason = j
            .drop_reason
            .as_deref()
            .map(|r| format!(" [{}]", for_terminal(r)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} → {}  {}{}{}: {}",
            for_terminal(&j.protocol),
            for_terminal(&j.src),
            for_terminal(&j.dst),
            j.outcome,
            entry,
            reason,
            hops.join(" → ")
        );
    }
    out
}

/// Microseconds with one decimal, exact to 0.1 µs (a sub-µs figure stays sub-µs).
fn us1(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// The measured flowchart and timeline, as Mermaid: values are p50s in µs with one decimal;
/// a stage without a measurement says "not observed", never a number.
pub fn mermaid(summary: &JourneySummary) -> String {
    let r = &summary.rates;
    // The median time from the XDP hook to `stage`, if it was measured.
    let at = |stage: Stage| summary.cumulative_at(stage).map(|c| c.p50_ns);
    let since = |stage: Stage| match at(stage) {
        Some(ns) => format!("+{}", us1(ns)),
        None => "not observed".to_string(),
    };
    let estimate = |stage: Stage| {
        summary
            .stage_rates
            .iter()
            .find(|s| s.stage == stage && s.share.is_some())
            .map_or("not observed".to_string(), |s| {
                format!("{} est.", pps(s.pps))
            })
    };
    let mut out = String::new();
    out.push_str("```mermaid\nflowchart LR\n");
    let nic = if summary.nic_to_xdp.measured {
        "NIC"
    } else {
        "NIC<br/>NIC → XDP not observable here"
    };
    let xdp = match at(Stage::Xdp) {
        Some(ns) => format!("p50 {}", us1(ns)),
        None => "not observed".to_string(),
    };
    let _ = writeln!(
        out,
        "  NIC[{nic}] -->|{} counted| XDP{{XDP verdict<br/>{xdp}}}",
        pps(r.seen_pps),
    );
    let _ = writeln!(
        out,
        "  XDP -->|DROP {} counted| DROP[XDP_DROP]",
        pps(r.dropped_pps)
    );
    let _ = writeln!(
        out,
        "  XDP -->|PASS {} counted| STACK[TCP/IP stack<br/>{}]",
        pps(r.passed_pps),
        since(Stage::Stack)
    );
    let _ = writeln!(
        out,
        "  STACK -->|{}| SOCKET[socket<br/>{}]",
        estimate(Stage::Socket),
        since(Stage::Socket)
    );
    let _ = writeln!(
        out,
        "  SOCKET -->|{}| APP[application<br/>{}]",
        estimate(Stage::App),
        since(Stage::App)
    );
    let _ = writeln!(
        out,
        "  STACK -->|{}| KDROP[kernel drop]",
        estimate(Stage::KernelDrop)
    );
    // Gantt bars need whole units: 1 unit = 0.1 µs, and each bar's name carries its value.
    out.push_str(
        "```\n\n```mermaid\ngantt\n  title A packet on this host, p50 since the XDP hook (1 unit = 0.1 µs)\n  dateFormat X\n  axisFormat %s\n",
    );
    let tenths = |ns: u64| (ns + 50) / 100;
    let mut prev = 0u64;
    out.push_str("  section passed by XDP\n");
    for (stage, label) in [
        (Stage::Xdp, "XDP verdict"),
        (Stage::Stack, "to the stack"),
        (Stage::Socket, "to the socket"),
        (Stage::App, "until read"),
    ] {
        let Some(ns) = at(stage) else {
            let _ = writeln!(out, "  %% {label}: not observed");
            continue;
        };
        let end = tenths(ns).max(prev);
        let _ = writeln!(out, "  {label} {} : {prev}, {end}", us1(ns));
        prev = end;
    }
    out.push_str("```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero_api::{
        journey::{
            DecidingEntry, Hop, Journey, KernelDropCount, MissingStage, Outcome, Outcomes,
            RateBasis, Rates, StageLatency, StageRate,
        },
        sample::Sample,
    };

    fn latency(stage: Stage, p50_ns: u64, p99_ns: u64) -> StageLatency {
        StageLatency {
            count: 5,
            label: "XDP verdict".into(),
            p50_ns,
            p99_ns,
            stage,
        }
    }

    fn summary() -> JourneySummary {
        let mut s = JourneySummary::sample();
        s.cost = None;
        s.tracing.filter = "udp".into();
        s.tracing.sample_every = 8;
        s.tracing.stages_missing = vec![];
        s.rates = Rates {
            seen_pps: 12000.0,
            dropped_pps: 10000.0,
            passed_pps: 2000.0,
            socket_pps: Some(1900.0),
            app_pps: Some(1900.0),
            kernel_dropped_pps: Some(100.0),
            ..Rates::default()
        };
        s.stages = vec![latency(Stage::Xdp, 300, 900)];
        s.cumulative = vec![
            latency(Stage::Xdp, 300, 900),
            latency(Stage::Stack, 2000, 5000),
            latency(Stage::Socket, 9000, 20000),
            latency(Stage::App, 40000, 90000),
        ];
        s.outcomes = Outcomes {
            xdp_drop: 3,
            delivered: 2,
            ..Outcomes::default()
        };
        s.kernel_drop_reasons = vec![];
        s.stage_rates = vec![StageRate {
            basis: RateBasis::Estimate,
            population: "packets matching \"udp\"".into(),
            pps: 1900.0,
            share: Some(0.95),
            stage: Stage::Socket,
        }];
        s
    }

    fn journey(hops: Vec<Hop>) -> Journey {
        Journey {
            protocol: "udp".into(),
            src: "198.18.0.66:1".into(),
            dst: "198.18.0.1:7000".into(),
            outcome: Outcome::XdpDrop,
            entry: Some(DecidingEntry {
                entry: "198.18.0.66/32".parse().unwrap(),
                expires_unix: None,
                reason: None,
                resolved: groundzero_api::journey::EntryResolution::KernelKey,
                resolved_unix_ms: 0,
                source: None,
            }),
            drop_reason: None,
            hops,
            ..Journey::sample()
        }
    }

    #[test]
    fn text_and_mermaid_show_measured_numbers() {
        let recent = RecentReply {
            journeys: vec![journey(vec![
                Hop {
                    cpu: 0,
                    label: "XDP hook".into(),
                    stage: HopStage::At(Stage::Xdp),
                    t_ns: 0,
                },
                Hop {
                    cpu: 0,
                    label: "XDP_DROP".into(),
                    stage: HopStage::XdpVerdict,
                    t_ns: 310,
                },
            ])],
        };
        let t = text(&summary(), &recent);
        assert!(t.contains("sampling 1 in 8 packets (udp)"), "{t}");
        assert!(t.contains("NIC → XDP 12.0k pps"), "{t}");
        // A stage without samples says so, and why; no figure stands in for it.
        assert!(t.contains("gro          not observed: generic XDP"), "{t}");
        assert!(
            !t.lines().any(|l| l.starts_with("gro ") && l.contains("µs")),
            "{t}"
        );
        assert!(
            t.contains("NIC → XDP: veth gives no RX hardware timestamp"),
            "{t}"
        );
        assert!(
            t.contains("p50 0.3 µs p99 0.9 µs over 4096 sampled packets"),
            "{t}"
        );
        assert!(t.contains("41 ns per packet (kernel run-time mean"), "{t}");
        assert!(t.contains("1.9k pps  estimate (packets matching"), "{t}");
        assert!(
            t.contains("[entry 198.18.0.66/32]: xdp_verdict +0.3 µs"),
            "{t}"
        );
        let m = mermaid(&summary());
        assert!(
            m.contains("-->|12.0k pps counted| XDP{XDP verdict<br/>p50 0.3 µs}"),
            "{m}"
        );
        assert!(m.contains("NIC → XDP not observable here"), "{m}");
        // Exact to 0.1 µs: a 0.3 µs verdict is not rounded up to 1 µs.
        assert!(m.contains("XDP verdict 0.3 µs : 0, 3"), "{m}");
        assert!(m.contains("to the stack 2.0 µs : 3, 20"), "{m}");
        assert!(m.contains("until read 40.0 µs : 90, 400"), "{m}");
        assert!(m.contains("STACK -->|1.9k pps est.| SOCKET"), "{m}");
        // Without a measurement: "not observed", no number.
        let mut bare = summary();
        bare.cumulative.retain(|c| c.stage == Stage::Xdp);
        bare.stage_rates.clear();
        let m = mermaid(&bare);
        assert!(m.contains("SOCKET[socket<br/>not observed]"), "{m}");
        assert!(m.contains("STACK -->|not observed| SOCKET"), "{m}");
        assert!(m.contains("%% until read: not observed"), "{m}");
        assert!(!m.contains("until read 0"), "{m}");
    }

    #[test]
    fn daemon_strings_are_escaped() {
        let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}";
        let mut s = summary();
        s.tracing.filter = evil.into();
        s.tracing.stages_missing = vec![MissingStage {
            hook: evil.into(),
            stage: Stage::Ip,
            why: evil.into(),
        }];
        s.stages[0].label = evil.into();
        s.kernel_drop_reasons = vec![KernelDropCount {
            count: 1,
            reason: evil.into(),
        }];
        let mut j = journey(vec![Hop {
            cpu: 0,
            label: evil.into(),
            stage: HopStage::At(Stage::Socket),
            t_ns: 5,
        }]);
        j.protocol = evil.into();
        j.src = evil.into();
        j.dst = evil.into();
        j.drop_reason = Some(evil.into());
        let t = text(&s, &RecentReply { journeys: vec![j] });
        assert!(!t.contains(['\u{1b}', '\u{7}']), "{t:?}");
        assert!(t.contains("[\\u{1b}[2J\\u{1b}]0;owned\\u{7}]"), "{t}");
    }
}
