//! BENCHMARKS.md section of part 6, the verdict taken apart.

use std::fmt::Write as _;

use anyhow::Result;

use crate::pieces::{Packet, Pieces};

pub fn section(md: &mut String, p: &Pieces) -> Result<()> {
    writeln!(
        md,
        "## 6. The verdict taken apart (`BPF_PROG_TEST_RUN`)\n\n\
         Each piece of the verdict runs alone in a small XDP program after the real parser \
         (crates/groundzero-ebpf/src/bin/pieces.rs, built from the same modules as the \
         groundzero program); a piece's cost is its program minus the parse-only program of \
         the same round. The whole programs (a minimal Rust/Aya program, xdp-filter, \
         groundzero{}) are measured in the same rounds, above the floor of the same round. \
         {} rounds of {} runs per program and packet; medians (min–max over rounds), ns.\n",
        if p.baseline.is_some() {
            " and the baseline build"
        } else {
            ""
        },
        p.rounds,
        p.repeat
    )?;
    if let Some(b) = &p.baseline {
        writeln!(md, "Baseline object: `{b}`.\n")?;
    }
    writeln!(
        md,
        "| family | packet | program | above floor | above parse | ÷ xdp-filter |\n|---|---|---|---|---|---|"
    )?;
    for packet in [Packet::Pass, Packet::Exact, Packet::PassVlan] {
        for r in p.rows.iter().filter(|r| r.packet == packet) {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                r.family.label(),
                r.packet.label(),
                r.what,
                r.above_floor.show(1),
                r.above_parse.map_or("".into(), |s| s.show(1)),
                r.ratio_to_xdp_filter.map_or("".into(), |s| s.show(2)),
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}
