//! Part 2's memory section: the pointer chase's latencies, and the cost of a lookup with a
//! different source per packet read as a number of DRAM latencies, groundzero against the bare
//! lookup with the same entries.

use std::fmt::Write as _;

use anyhow::Result;

use crate::{
    per_packet::{Family, Verdict},
    scale::Scale,
};

/// The million-source target's rows of the targets table: distinct sources at the largest
/// exact level, above the floor, in DRAM latencies (4 KiB pages).
pub fn target_rows(md: &mut String, s: &Scale) -> Result<()> {
    let Some(dram) = s.hierarchy.as_ref().and_then(|h| h.dram_ns()) else {
        return Ok(());
    };
    let n = *s.exact_levels.iter().max().unwrap();
    for family in [Family::V4, Family::V6] {
        for verdict in [Verdict::ExactDrop, Verdict::Pass] {
            let Some(p) = s.points.iter().find(|p| {
                p.exact == n && p.cidr == 0 && p.family == family && p.verdict == verdict
            }) else {
                continue;
            };
            let latencies = p.cold.above / dram;
            writeln!(
                md,
                "| {} distinct sources at {} exact entries, {} {}, one packet per syscall, above the floor, in DRAM latencies ({dram:.0} ns, part 2) | {latencies:.2} ({:.0} ns) | ≤ 3 | {} |",
                p.cold.samples,
                crate::plot::human(n as f64),
                family.label(),
                verdict.short(),
                p.cold.above,
                if latencies <= 3.0 { "**PASS**" } else { "**MISS**" }
            )?;
            if let Some(w) = &p.cold.walk {
                let latencies = w.groundzero.median / dram;
                writeln!(
                    md,
                    "| {} distinct sources at {} exact entries, {} {}, back to back in one test run (a flood), above the floor, in DRAM latencies ({dram:.0} ns, part 2) | {latencies:.2} ({:.0} ns; {:.0}–{:.0} over {} rounds) | ≤ 3 | {} |",
                    w.sources,
                    crate::plot::human(n as f64),
                    family.label(),
                    verdict.short(),
                    w.groundzero.median,
                    w.groundzero.min,
                    w.groundzero.max,
                    w.rounds,
                    if latencies <= 3.0 { "**PASS**" } else { "**MISS**" }
                )?;
            }
        }
    }
    Ok(())
}

pub fn section(md: &mut String, s: &Scale) -> Result<()> {
    let Some(h) = &s.hierarchy else {
        return Ok(());
    };
    writeln!(
        md,
        "### Memory latency and the million-source lookup\n\n\
         Measured in the same run, on the same CPU, right after the list sizes above: a pointer \
         chase through a buffer of each size, one pointer per 64-byte line, in one random cycle \
         (each load waits for the one before; the prefetchers cannot guess the next line). The \
         kernel reports a last-level cache of {}; the DRAM buffer is four times that (at least \
         256 MiB). The LLC and DRAM buffers are chased on 4 KiB pages (as a BPF hash map's vmalloc'd memory is: nearly every \
         load also misses the TLB and walks the page tables, in a VM through the host's nested \
         tables too) and on 2 MiB transparent huge pages. Each figure is over {} chunks of {} \
         loads: a chunk the scheduler interrupted is an outlier, not a bias of the median.\n\n\
         | level | buffer | pages | ns per load, median (min–max) |\n|---|---|---|---|",
        h.llc_bytes
            .map_or_else(|| "no size".to_string(), |b| format!("{} MiB", b >> 20)),
        h.levels.first().map_or(0, |l| l.ns.n),
        h.steps
    )?;
    for l in &h.levels {
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            l.label,
            if l.bytes >= 1 << 20 {
                format!("{} MiB", l.bytes >> 20)
            } else {
                format!("{} KiB", l.bytes >> 10)
            },
            match (l.huge_pages, l.huge_backed) {
                (false, _) => "4 KiB".to_string(),
                (true, Some(true)) => "2 MiB".to_string(),
                (true, Some(false)) => "2 MiB asked, not given".to_string(),
                (true, None) => "2 MiB asked".to_string(),
            },
            l.ns.show(1)
        )?;
    }
    let Some(dram) = h.dram_ns() else {
        return Ok(());
    };
    let n = *s.exact_levels.iter().max().unwrap();
    writeln!(
        md,
        "\nAt {} exact entries per family and no prefixes, with a different source per packet \
         (the *distinct sources* columns above), each cost above the floor in DRAM latencies \
         (4 KiB pages, {dram:.0} ns). *Bare lookup* is a 16-instruction XDP program assembled by \
         the benchmark: EtherType check, one `bpf_map_lookup_elem` of the source in a \
         preallocated BPF hash map of groundzero's exact capacity holding the same entries, \
         drop if found; the least a source blocklist can do. groundzero's cost less the bare \
         lookup's is what its program adds to the map's own misses.\n\n\
         *Bare, not preallocated* is the same program on a map made with `BPF_F_NO_PREALLOC`: \
         its elements come from the kernel's slab, in memory the kernel maps with huge pages, \
         instead of one vmalloc'd area of 4 KiB pages (its bucket array stays vmalloc'd).\n\n\
         | family | verdict | groundzero, ns | in DRAM latencies | bare lookup, ns | in DRAM latencies | groundzero − bare, DRAM latencies | bare, not preallocated, ns | in DRAM latencies | target ≤ 3 |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        crate::plot::human(n as f64)
    )?;
    for family in [Family::V4, Family::V6] {
        for verdict in [Verdict::ExactDrop, Verdict::Pass] {
            let Some(p) = s.points.iter().find(|p| {
                p.exact == n && p.cidr == 0 && p.family == family && p.verdict == verdict
            }) else {
                continue;
            };
            let g = p.cold.above;
            let (bare, bare_l, diff) = match p.cold.bare_above {
                Some(b) => (
                    format!("{b:.0}"),
                    format!("{:.1}", b / dram),
                    format!("{:.1}", (g - b) / dram),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let (unpre, unpre_l) = p.cold.bare_unpreallocated_above.map_or_else(
                || ("–".to_string(), "–".to_string()),
                |u| (format!("{u:.0}"), format!("{:.1}", u / dram)),
            );
            writeln!(
                md,
                "| {} | {} | {g:.0} | {:.1} | {bare} | {bare_l} | {diff} | {unpre} | {unpre_l} | {} |",
                family.label(),
                verdict.short(),
                g / dram,
                if g / dram <= 3.0 { "met" } else { "missed" }
            )?;
        }
    }
    walk_table(md, s, dram)?;
    writeln!(
        md,
        "\nWhat a lookup touches that a different source per packet finds cold: the hash map's \
         bucket (16 bytes in an array of 16 bytes per slot of capacity, 16 MiB at the default \
         1,048,576, a random one per source), the element it points to (the key and, inline \
         after it, the value: one line, sometimes two), and, for each of those two, the TLB \
         entry of its 4 KiB page (the map is vmalloc'd in 4 KiB pages, so at a million entries \
         both the bucket array and the elements span more pages than the TLB holds: each miss \
         adds a page walk, and under a VM's nested paging a walk is itself up to several \
         dependent loads, mostly cached). The bare lookup pays exactly those; the difference \
         between the two DRAM rows above ({} vs {}) is what the page walks cost this machine \
         per load. groundzero does not take that path for a listed source (map layout 6): it \
         reads the source's slot in the exact slot table (an array of 2,097,152 slots of 24 \
         bytes for IPv4, 40 for IPv6: 48 and 80 MiB, a random slot per source, so one line, \
         the next one too when the probe goes on or a slot straddles two, and the TLB entry of \
         its page), and the hit counter it writes is in that same slot. The hash and its two \
         misses are left to the addresses whose window of 8 slots is full. Besides that, its \
         program reads the allowlist's and the blocked prefixes' summaries and the exact \
         summary, as bitmaps (map layout 5: a bit per key, 128 KiB per prefix summary and 512 \
         KiB per exact summary, so that a flood finds them in the caches and their few pages \
         in the TLB; up to layout 4 the program read the counts, 1 MiB and 4 MiB, a random \
         line and page of each per source), and its per-CPU counters (warm). A source whose \
         exact summary bit is clear skips the slots and the hash altogether: with a million \
         entries about four keys in five are clear.\n",
        format_args!("{dram:.0} ns on 4 KiB pages"),
        h.dram_huge_ns()
            .map_or_else(|| "–".to_string(), |d| format!("{d:.0} ns on huge pages"))
    )?;
    Ok(())
}

/// The flood from many sources in one test run, at every exact level (no prefixes).
fn walk_table(md: &mut String, s: &Scale, dram: f64) -> Result<()> {
    let walks: Vec<_> = s
        .points
        .iter()
        .filter(|p| p.cidr == 0)
        .filter_map(|p| p.cold.walk.map(|w| (p, w)))
        .collect();
    let Some((_, first)) = walks.first() else {
        return Ok(());
    };
    writeln!(
        md,
        "\n**A flood from many sources, back to back.** The *one packet per syscall* figures \
         above run each packet in a `BPF_PROG_TEST_RUN` of its own: between two packets the \
         syscall path and the benchmark run, so everything the program reads is cold, its code, \
         configuration word, counters and clock cache included, which a flood's packets, run \
         one after another by NAPI, find warm. Here a hand-assembled XDP program \
         (crates/groundzero-bench/src/source_walk.rs) writes the next source of a walk into the \
         frame and tail-calls the program measured; one test run sends {} packets (the kernel \
         keeps the frame's data from run to run, so the walker keeps its position in the \
         payload, and checks it moved once per packet). Exact drops walk a random subset of the \
         list, each entry once per walk; passes walk random addresses on no list. The same walk \
         into the floor program is subtracted, so the walker and the tail call cancel; what \
         does not cancel is that the walker streams its list of sources (16 bytes each) through \
         the cache beside what the program reads, as a NIC's receive buffers stream beside a \
         real flood. ns per \
         packet above that, median (min–max) over {} rounds, and in DRAM latencies ({dram:.0} \
         ns).\n\n\
         | family | verdict | entries | sources walked | groundzero, ns | in DRAM latencies | bare lookup, ns | in DRAM latencies | groundzero − bare, DRAM latencies | bare, not preallocated, ns | target ≤ 3 (at the largest list) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        first.packets_per_run, first.rounds
    )?;
    let largest = *s.exact_levels.iter().max().unwrap();
    for family in [Family::V4, Family::V6] {
        for verdict in [Verdict::ExactDrop, Verdict::Pass] {
            for (p, w) in walks
                .iter()
                .filter(|(p, _)| p.family == family && p.verdict == verdict)
            {
                let g = w.groundzero.median;
                let b = w.bare.median;
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {} |",
                    family.label(),
                    verdict.short(),
                    crate::plot::human(p.exact as f64),
                    crate::plot::human(w.sources as f64),
                    w.groundzero.show(0),
                    g / dram,
                    b,
                    b / dram,
                    (g - b) / dram,
                    w.bare_unpreallocated.median,
                    match (p.exact == largest, g / dram <= 3.0) {
                        (false, _) => "–",
                        (true, true) => "met",
                        (true, false) => "missed",
                    }
                )?;
            }
        }
    }
    Ok(())
}
