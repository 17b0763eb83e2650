//! Part 8: why two measurements of the same ratio disagreed (issue 18, item 1).
//!
//! Part 1 measures 41 rounds, each round running every (case, program) pair once for a million
//! runs, in an order rotated every round. An independent measurement ran 5 rounds of 7 × 1M:
//! each program seven times in a row on one packet, then the next. Here both protocols run in
//! one process on the same programs, and groundzero twice: with part 1's lists (one exact block,
//! one blocked prefix and one allowlisted address per family) and with xdp-filter's (the exact
//! block alone), so the ratio's dependence on the protocol and on the list contents is measured
//! side by side.

use anyhow::{ensure, Result};
use groundzero::{parse_entry, Shield, ShieldOptions};

use crate::{
    per_packet::{frame, order, sources, Family, Verdict},
    progs::{Floor, XdpFilter},
    stats::{median, Summary},
    Config,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Part 1's: every pair once per round, rotated order.
    Interleaved,
    /// The independent run's: each program `back_to_back` times in a row per round.
    BackToBack,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Interleaved => "interleaved (part 1's)",
            Protocol::BackToBack => "back to back (the independent run's)",
        }
    }
}

/// One case under one protocol: ns above the floor and the ratios to xdp-filter, per round.
#[derive(Clone, Debug)]
pub struct Row {
    pub protocol: Protocol,
    pub family: Family,
    pub verdict: Verdict,
    pub floor: Summary,
    pub full_above: Summary,
    pub exact_only_above: Summary,
    pub xdp_filter_above: Summary,
    /// groundzero with part 1's lists ÷ xdp-filter, above the floor, per round.
    pub full_ratio: Summary,
    /// groundzero with xdp-filter's lists ÷ xdp-filter.
    pub exact_only_ratio: Summary,
}

#[derive(Clone, Debug)]
pub struct Agreement {
    pub repeat: u32,
    pub interleaved_rounds: usize,
    pub back_to_back_rounds: usize,
    pub back_to_back: usize,
    pub rows: Vec<Row>,
    pub load_before: String,
    pub load_after: String,
}

const PROGRAMS: usize = 4; // floor, groundzero full, groundzero exact only, xdp-filter

pub fn run(config: &Config) -> Result<Agreement> {
    let load_before = crate::sys::load_average();
    let floor = Floor::load()?;
    let mut full = Shield::load(ShieldOptions::default())?;
    let mut exact_only = Shield::load(ShieldOptions::default())?;
    let mut xdp_filter = XdpFilter::load(None)?;
    let mut cases: Vec<(Family, Verdict, Vec<u8>)> = Vec::new();
    for family in [Family::V4, Family::V6] {
        let s = sources(family);
        full.block(parse_entry(&s.exact.to_string())?)?;
        full.block(parse_entry(s.cidr_prefix)?)?;
        full.allow(parse_entry(&s.allowed.to_string())?)?;
        exact_only.block(parse_entry(&s.exact.to_string())?)?;
        xdp_filter.block(s.exact)?;
        for (verdict, src) in [(Verdict::Pass, s.pass), (Verdict::ExactDrop, s.exact)] {
            cases.push((family, verdict, frame(src)));
        }
    }
    let measure = |program: usize, packet: &[u8], repeat: u32| -> Result<f64> {
        let d = match program {
            0 => floor.test_run(packet, repeat)?.1,
            1 => full.test_run_repeat(packet, repeat)?.1,
            2 => exact_only.test_run_repeat(packet, repeat)?.1,
            _ => xdp_filter.test_run(packet, repeat)?.1,
        };
        Ok(d.as_nanos() as f64)
    };
    for (family, verdict, packet) in &cases {
        let (action, _) = full.test_run_repeat(packet, 1000)?;
        ensure!(
            action == verdict.action(),
            "groundzero gave {action:?} for {family:?} {verdict:?}"
        );
    }
    let (interleaved_rounds, back_to_back_rounds, back_to_back) =
        if config.smoke { (3, 1, 2) } else { (41, 5, 7) };
    let mut rows = Vec::new();
    // [case][program] -> per-round values, for each protocol.
    let mut interleaved = vec![vec![Vec::new(); PROGRAMS]; cases.len()];
    let jobs: Vec<(usize, usize)> = (0..cases.len())
        .flat_map(|c| (0..PROGRAMS).map(move |p| (c, p)))
        .collect();
    for round in 0..interleaved_rounds {
        for j in order(jobs.len(), round) {
            let (c, p) = jobs[j];
            interleaved[c][p].push(measure(p, &cases[c].2, config.repeat)?);
        }
    }
    crate::progress("agreement: interleaved rounds done");
    let mut consecutive = vec![vec![Vec::new(); PROGRAMS]; cases.len()];
    for _ in 0..back_to_back_rounds {
        for (c, case) in cases.iter().enumerate() {
            // The independent run's order: the floor, xdp-filter, then groundzero.
            for p in [0, 3, 2, 1] {
                let runs: Vec<f64> = (0..back_to_back)
                    .map(|_| measure(p, &case.2, config.repeat))
                    .collect::<Result<_>>()?;
                consecutive[c][p].push(median(&runs));
            }
        }
    }
    crate::progress("agreement: back-to-back rounds done");
    for (protocol, values) in [
        (Protocol::Interleaved, &interleaved),
        (Protocol::BackToBack, &consecutive),
    ] {
        for (c, (family, verdict, _)) in cases.iter().enumerate() {
            let v = &values[c];
            let above =
                |p: usize| -> Vec<f64> { v[p].iter().zip(&v[0]).map(|(a, f)| a - f).collect() };
            let ratio = |p: usize| -> Summary {
                let r: Vec<f64> = above(p)
                    .iter()
                    .zip(above(3))
                    .map(|(g, x)| g / x.max(0.5))
                    .collect();
                Summary::of(&r)
            };
            rows.push(Row {
                protocol,
                family: *family,
                verdict: *verdict,
                floor: Summary::of(&v[0]),
                full_above: Summary::of(&above(1)),
                exact_only_above: Summary::of(&above(2)),
                xdp_filter_above: Summary::of(&above(3)),
                full_ratio: ratio(1),
                exact_only_ratio: ratio(2),
            });
        }
    }
    Ok(Agreement {
        repeat: config.repeat,
        interleaved_rounds,
        back_to_back_rounds,
        back_to_back,
        rows,
        load_before,
        load_after: crate::sys::load_average(),
    })
}
