//! Part 7's section of BENCHMARKS.md: both CPUs at once.

use std::fmt::Write as _;

use anyhow::Result;

use crate::multicore::{Multicore, Program, Sources};

pub fn section(md: &mut String, m: Option<&Multicore>) -> Result<()> {
    let Some(m) = m else {
        writeln!(
            md,
            "## 7. Both CPUs at once\n\nNot run (`--parts` left it out).\n"
        )?;
        return Ok(());
    };
    writeln!(md, "## 7. Both CPUs at once\n")?;
    if let Some(why) = &m.skipped {
        writeln!(md, "Not run: {why}.\n")?;
        return Ok(());
    }
    writeln!(
        md,
        "Load average (1, 5, 15 min) when this part started: {}; when it ended: {}. Other work \
         on the machine shares these two CPUs, which shows in wall-clock rates more than in CPU \
         time per packet.\n",
        m.load_before, m.load_after
    )?;
    test_run_table(md, m)?;
    flood_table(md, m)?;
    Ok(())
}

/// The two-core target's rows of the targets table: drop throughput with two cores ÷ one, from
/// the receivers' CPU time (capacity), for blocked sources.
pub fn target_rows(md: &mut String, m: Option<&Multicore>) -> Result<()> {
    let Some(m) = m else { return Ok(()) };
    for program in [Program::Groundzero, Program::XdpFilter] {
        for sources in [Sources::Shared, Sources::Spread] {
            let (Some(one), Some(two)) = (
                m.flood_point(program, sources, 1),
                m.flood_point(program, sources, 2),
            ) else {
                continue;
            };
            let capacity = 2.0 * one.receiver_ns.median / two.receiver_ns.median.max(1.0);
            let wall = two.dropped_mpps.median / one.dropped_mpps.median.max(1e-9);
            writeln!(
                md,
                "| {}, 2-core drop throughput ÷ 1-core, {} (part 7) | {capacity:.2}× from receiver CPU time ({wall:.2}× wall clock) | ≥ 1.8 | {} |",
                program.label(),
                sources.label(),
                if capacity >= 1.8 { "**PASS**" } else { "**MISS**" }
            )?;
        }
    }
    Ok(())
}

fn test_run_table(md: &mut String, m: &Multicore) -> Result<()> {
    writeln!(
        md,
        "### `BPF_PROG_TEST_RUN` on one and on two CPUs\n\n\
         Each program holds the same {} blocked IPv4 sources. One thread runs it {} times on a \
         blocked source; then two threads pinned to CPU 0 and CPU 1 run it at the same time, on \
         one shared source (groundzero's per-entry hit counter is then one cache line written \
         from both CPUs) or each on its own source. The baseline build, when given \
         (`--baseline-object`), is an older build of the groundzero program, measured the same way. ns per run (mean of the threads), median \
         (min–max) over {} rounds; *above floor* subtracts the floor measured the same way.\n\n\
         | program | 1 thread | 2 threads, one source | 2 threads, own sources | above floor: 1 / shared / own | shared ÷ 1 thread, above floor |\n\
         |---|---|---|---|---|---|",
        1 + crate::multicore::SPREAD as usize,
        m.test_run_repeat,
        m.test_run_rounds
    )?;
    let floor = |shared: bool, threads: usize| {
        m.test_run_point(Program::Floor, shared, threads)
            .map(|p| p.ns.median)
    };
    for program in [
        Program::Floor,
        Program::Groundzero,
        Program::Baseline,
        Program::XdpFilter,
    ] {
        let (Some(one), Some(shared), Some(own)) = (
            m.test_run_point(program, true, 1),
            m.test_run_point(program, true, 2),
            m.test_run_point(program, false, 2),
        ) else {
            continue;
        };
        let above = match (floor(true, 1), floor(true, 2), floor(false, 2)) {
            (Some(f1), Some(fs), Some(fo)) if program != Program::Floor => Some((
                one.ns.median - f1,
                shared.ns.median - fs,
                own.ns.median - fo,
            )),
            _ => None,
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            program.label(),
            one.ns.show(1),
            shared.ns.show(1),
            own.ns.show(1),
            above.map_or_else(
                || "–".to_string(),
                |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}")
            ),
            above.map_or_else(
                || "–".to_string(),
                |(a, b, _)| format!("{:.2}×", b / a.max(0.5))
            ),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn flood_table(md: &mut String, m: &Multicore) -> Result<()> {
    writeln!(
        md,
        "### Flood on a two-queue veth\n\n\
         The target's veth has two receive queues, each with its own NAPI thread. A generator \
         pinned to CPU *i* sends up to {} frames (60-byte IPv4/UDP) as fast as it can into queue \
         *i*, with XDP_TX in live-frames mode, rewriting each frame's source. With 4,096 blocked \
         sources, the generator on CPU *i* sends from its own 2,048 of them (as a NIC's \
         receive-side scaling, which picks the queue by a hash of the source, would): each \
         entry's hit counter is written by one CPU; with one blocked source, by both. *1 core*: one \
         generator on CPU 0, and both NAPI threads pinned to CPU 0. *2 cores*: a generator and a \
         NAPI thread on each CPU. The generators share the cores with the receivers, so the \
         wall-clock rates are what a core does generating *and* receiving; the receiver's own \
         cost is its NAPI threads' CPU time over the frames the queues took (XDP, and for passing \
         frames the whole stack up to the UDP layer, which finds no socket). \
         *Capacity* is what a core doing only the receiving would take: 1000 ÷ that ns, per core, \
         summed over the cores. Median (min–max) over {} runs.\n\n\
         | program | sources | cores | offered, Mpps | taken, Mpps | dropped, Mpps | dropped per core, Mpps | receiver ns per frame | capacity, Mpps |\n\
         |---|---|---|---|---|---|---|---|---|",
        m.packets_per_core, m.repeats
    )?;
    for program in [Program::Groundzero, Program::XdpFilter] {
        for sources in [Sources::Shared, Sources::Spread, Sources::Passing] {
            for cores in [1, 2] {
                let Some(p) = m.flood_point(program, sources, cores) else {
                    continue;
                };
                writeln!(
                    md,
                    "| {} | {} | {cores} | {} | {} | {} | {} | {} | {:.2} |",
                    program.label(),
                    sources.label(),
                    p.offered_mpps.show(2),
                    p.processed_mpps.show(2),
                    p.dropped_mpps.show(2),
                    if cores == 1 {
                        "–".to_string()
                    } else {
                        p.per_core_dropped_mpps
                            .iter()
                            .map(|s| format!("{:.2}", s.median))
                            .collect::<Vec<_>>()
                            .join(" + ")
                    },
                    p.receiver_ns.show(0),
                    cores as f64 * 1000.0 / p.receiver_ns.median.max(1.0),
                )?;
            }
        }
    }
    writeln!(
        md,
        "\n**Scaling from one core to two** (target: drop throughput ≥ 1.8×, judged on capacity: \
         the wall clock also counts the generators and whatever else the machine runs):\n\n\
         | program | sources | taken, 2 ÷ 1 core (wall clock) | capacity, 2 ÷ 1 core | target |\n\
         |---|---|---|---|---|"
    )?;
    for program in [Program::Groundzero, Program::XdpFilter] {
        for sources in [Sources::Shared, Sources::Spread, Sources::Passing] {
            let (Some(one), Some(two)) = (
                m.flood_point(program, sources, 1),
                m.flood_point(program, sources, 2),
            ) else {
                continue;
            };
            let wall = two.processed_mpps.median / one.processed_mpps.median.max(1e-9);
            let capacity = 2.0 * one.receiver_ns.median / two.receiver_ns.median.max(1.0);
            writeln!(
                md,
                "| {} | {} | {wall:.2}× | {capacity:.2}× | {} |",
                program.label(),
                sources.label(),
                if sources == Sources::Passing {
                    "– (passes)"
                } else if capacity >= 1.8 {
                    "met"
                } else {
                    "missed"
                }
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}
