//! `groundzero journey`: the measured journey in the terminal, or as Mermaid for docs.
use std::fmt::Write;

use groundzero::text::for_terminal;
use serde_json::Value;

// Every string in the daemon's answer is printed through `txt` / `for_terminal`: labels and
// addresses are the daemon's own today, but a renderer should not trust that to stay true.
use crate::remote::txt;

fn us(ns: &Value) -> String {
    let ns = ns.as_f64().unwrap_or(0.0);
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn pps(v: &Value) -> String {
    let x = v.as_f64().unwrap_or(0.0);
    if x >= 1e6 {
        format!("{:.2}M pps", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k pps", x / 1e3)
    } else {
        format!("{x:.0} pps")
    }
}

/// Per-stage summary and recent journeys, as text.
pub fn text(summary: &Value, recent: &Value) -> String {
    let mut out = String::new();
    let t = &summary["tracing"];
    if t["enabled"] != true {
        out.push_str(
            "journey tracing is off: turn it on with `groundzero journey --enable` \
             or [journey] enabled = true\n\n",
        );
    } else {
        let _ = writeln!(
            out,
            "sampling 1 in {} packets ({})",
            t["sample_every"],
            for_terminal(t["filter"].as_str().unwrap_or("any"))
        );
    }
    for m in summary["tracing"]["stages_missing"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "  not observable here: {} at {} ({})",
            txt(&m["stage"]),
            txt(&m["hook"]),
            txt(&m["why"])
        );
    }
    let c = &summary["cost"];
    if c.is_object() {
        let ns = |v: &serde_json::Value| match v.as_f64() {
            Some(x) => format!("{x:.0} ns"),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "  cost here: XDP program {} per packet; tracing observers {:.1} ms CPU/s ({:.0} runs/s, {} each)",
            ns(&c["xdp_ns_per_packet"]),
            c["observers_cpu_ms_per_s"].as_f64().unwrap_or(0.0),
            c["observers_runs_per_s"].as_f64().unwrap_or(0.0),
            ns(&c["observers_ns_per_run"]),
        );
    }
    let r = &summary["rates"];
    let _ = writeln!(
        out,
        "\nNIC → XDP {}   → DROP {}   → PASS {}   → socket ~{}   → app ~{}   kernel drops ~{}",
        pps(&r["seen_pps"]),
        pps(&r["dropped_pps"]),
        pps(&r["passed_pps"]),
        pps(&r["socket_pps"]),
        pps(&r["app_pps"]),
        pps(&r["kernel_dropped_pps"]),
    );
    let _ = writeln!(
        out,
        "\n{:<12} {:<26} {:>8} {:>11} {:>11} {:>14}",
        "stage", "", "samples", "p50", "p99", "since XDP p50"
    );
    let cumulative = summary["cumulative"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in summary["stages"].as_array().into_iter().flatten() {
        let since = cumulative
            .iter()
            .find(|c| c["stage"] == s["stage"])
            .map(|c| us(&c["p50_ns"]))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<12} {:<26} {:>8} {:>11} {:>11} {:>14}",
            txt(&s["stage"]),
            txt(&s["label"]),
            s["count"].to_string(), // a JSON value's Display ignores width
            us(&s["p50_ns"]),
            us(&s["p99_ns"]),
            since
        );
    }
    let o = &summary["outcomes"];
    let _ = writeln!(
        out,
        "\noutcomes: {} dropped in XDP, {} delivered, {} consumed, {} dropped by the kernel, {} incomplete, {} unmatched",
        o["xdp_drop"], o["delivered"], o["consumed"], o["kernel_drop"], o["incomplete"], o["unmatched"]
    );
    for d in summary["kernel_drop_reasons"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "  kernel drop {}: {}", txt(&d["reason"]), d["count"]);
    }
    let journeys = recent["journeys"].as_array().cloned().unwrap_or_default();
    if !journeys.is_empty() {
        out.push_str("\nrecent journeys:\n");
    }
    for j in journeys {
        let hops: Vec<String> = j["hops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["stage"] != "xdp")
            .map(|h| format!("{} +{}", txt(&h["stage"]), us(&h["t_ns"])))
            .collect();
        let entry = j["entry"]["entry"]
            .as_str()
            .map(|e| format!(" [entry {}]", for_terminal(e)))
            .unwrap_or_default();
        let reason = j["drop_reason"]
            .as_str()
            .map(|r| format!(" [{}]", for_terminal(r)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} → {}  {}{}{}: {}",
            txt(&j["protocol"]),
            txt(&j["src"]),
            txt(&j["dst"]),
            txt(&j["outcome"]),
            entry,
            reason,
            hops.join(" → ")
        );
    }
    out
}

/// The measured flowchart and the with/without-XDP timeline, as Mermaid.
pub fn mermaid(summary: &Value) -> String {
    let r = &summary["rates"];
    let cumulative = summary["cumulative"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let at = |stage: &str, key: &str| {
        cumulative
            .iter()
            .find(|c| c["stage"] == stage)
            .map(|c| c[key].as_f64().unwrap_or(0.0))
            .unwrap_or(0.0)
    };
    let mut out = String::new();
    out.push_str("```mermaid\nflowchart LR\n");
    let _ = writeln!(
        out,
        "  NIC[NIC] -->|{}| XDP{{XDP verdict<br/>p50 {:.2} µs}}",
        pps(&r["seen_pps"]),
        at("xdp", "p50_ns") / 1e3
    );
    let _ = writeln!(
        out,
        "  XDP -->|DROP {}| DROP[XDP_DROP]",
        pps(&r["dropped_pps"])
    );
    let _ = writeln!(
        out,
        "  XDP -->|PASS {}| STACK[TCP/IP stack<br/>+{:.1} µs]",
        pps(&r["passed_pps"]),
        at("stack", "p50_ns") / 1e3
    );
    let _ = writeln!(
        out,
        "  STACK -->|~{}| SOCKET[socket<br/>+{:.1} µs]",
        pps(&r["socket_pps"]),
        at("socket", "p50_ns") / 1e3
    );
    let _ = writeln!(
        out,
        "  SOCKET -->|~{}| APP[application<br/>+{:.1} µs]",
        pps(&r["app_pps"]),
        at("app", "p50_ns") / 1e3
    );
    let _ = writeln!(
        out,
        "  STACK -->|~{}| KDROP[kernel drop]",
        pps(&r["kernel_dropped_pps"])
    );
    out.push_str("```\n\n```mermaid\ngantt\n  title A packet on this host, p50 (µs since the XDP hook)\n  dateFormat X\n  axisFormat %L\n");
    let xdp = (at("xdp", "p50_ns") / 1e3).ceil().max(1.0) as u64;
    out.push_str("  section with XDP (blocked)\n");
    let _ = writeln!(out, "  XDP verdict, dropped : 0, {xdp}");
    out.push_str("  section without XDP (the same packet, passed)\n");
    let mut prev = 0u64;
    for (stage, label) in [
        ("xdp", "XDP verdict"),
        ("stack", "to the stack"),
        ("socket", "to the socket"),
        ("app", "until read"),
    ] {
        let end = (at(stage, "p50_ns") / 1e3).ceil() as u64;
        if end > prev || stage == "xdp" {
            let end = end.max(prev + 1);
            let _ = writeln!(out, "  {label} : {prev}, {end}");
            prev = end;
        }
    }
    out.push_str("```\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary() -> Value {
        json!({
            "tracing": {"enabled": true, "sample_every": 8, "filter": "udp", "stages_missing": []},
            "rates": {"seen_pps": 12000.0, "dropped_pps": 10000.0, "passed_pps": 2000.0,
                      "socket_pps": 1900.0, "app_pps": 1900.0, "kernel_dropped_pps": 100.0},
            "stages": [{"stage": "xdp", "label": "XDP verdict", "count": 5, "p50_ns": 300, "p99_ns": 900}],
            "cumulative": [{"stage": "xdp", "p50_ns": 300, "p99_ns": 900},
                           {"stage": "stack", "p50_ns": 2000, "p99_ns": 5000},
                           {"stage": "socket", "p50_ns": 9000, "p99_ns": 20000},
                           {"stage": "app", "p50_ns": 40000, "p99_ns": 90000}],
            "outcomes": {"xdp_drop": 3, "delivered": 2, "consumed": 0, "kernel_drop": 0, "incomplete": 0, "unmatched": 0},
            "kernel_drop_reasons": [],
        })
    }

    #[test]
    fn text_and_mermaid_show_measured_numbers() {
        let recent = json!({"journeys": [{"protocol": "udp", "src": "198.18.0.66:1", "dst": "198.18.0.1:7000",
            "outcome": "xdp_drop", "entry": {"entry": "198.18.0.66/32"},
            "hops": [{"stage": "xdp", "t_ns": 0}, {"stage": "xdp_verdict", "t_ns": 310}]}]});
        let t = text(&summary(), &recent);
        assert!(t.contains("sampling 1 in 8 packets (udp)"), "{t}");
        assert!(t.contains("NIC → XDP 12.0k pps"), "{t}");
        assert!(
            t.contains("[entry 198.18.0.66/32]: xdp_verdict +0.3 µs"),
            "{t}"
        );
        let m = mermaid(&summary());
        assert!(
            m.contains("NIC[NIC] -->|12.0k pps| XDP{XDP verdict<br/>p50 0.30 µs}"),
            "{m}"
        );
        assert!(m.contains("XDP verdict, dropped : 0, 1"), "{m}");
        assert!(m.contains("until read : 9, 40"), "{m}");
    }

    #[test]
    fn daemon_strings_are_escaped() {
        let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}";
        let mut s = summary();
        s["tracing"]["filter"] = json!(evil);
        s["tracing"]["stages_missing"] = json!([{"stage": evil, "hook": evil, "why": evil}]);
        s["stages"][0]["label"] = json!(evil);
        s["kernel_drop_reasons"] = json!([{"reason": evil, "count": 1}]);
        let recent = json!({"journeys": [{"protocol": evil, "src": evil, "dst": evil,
            "outcome": evil, "entry": {"entry": evil}, "drop_reason": evil,
            "hops": [{"stage": evil, "t_ns": 5}]}]});
        let t = text(&s, &recent);
        assert!(!t.contains(['\u{1b}', '\u{7}']), "{t:?}");
        assert!(t.contains("[entry \\u{1b}[2J\\u{1b}]0;owned\\u{7}]"), "{t}");
    }
}
