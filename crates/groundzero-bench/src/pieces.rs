//! Part 6: the verdict taken apart. Each piece of groundzero's verdict runs in its own small
//! XDP program (crates/groundzero-ebpf/src/bin/pieces.rs: the real parser, then one piece),
//! next to the floor, a minimal Rust/Aya program (bin/minimal.rs), xdp-filter and the whole
//! groundzero program (and, given `--baseline-object`, an older build of it), all under
//! `BPF_PROG_TEST_RUN` in the same rounds. A piece's cost is its program minus the parse-only
//! program of the same round; every other row is above the floor of the same round.

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use aya::{
    maps::HashMap,
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use groundzero::{parse_entry, Shield, ShieldOptions};
use groundzero_lab::craft;

use crate::{
    per_packet::{frame, order, sources, Family, XDP_DROP, XDP_PASS},
    progs::{Floor, XdpFilter},
    stats::Summary,
    Config,
};

/// The pieces object's programs: (function, what it adds to the parser). Pieces that read a
/// map have one program per family, `_v4` and `_v6` appended to the name here.
pub const PIECES: [(&str, &str); 9] = [
    ("piece_parse", "parse (Ethernet, VLAN, IP header checks)"),
    ("piece_config", "config word read (array lookup)"),
    (
        "piece_allow_summary",
        "allowlist summary (array lookup; IPv6: two)",
    ),
    ("piece_exact", "exact lookup (hash)"),
    (
        "piece_exact_hit",
        "exact lookup in the slot table + hit counter and clock",
    ),
    (
        "piece_prefix_summary",
        "prefix summary (array lookup; IPv6: two)",
    ),
    (
        "piece_count_total",
        "counter write, program totals (per-CPU array)",
    ),
    (
        "piece_count_interface",
        "counter write, per interface (per-CPU array)",
    ),
    (
        "piece_exact_slot",
        "exact lookup (slot table: inlined array reads)",
    ),
];

/// Which packet a measurement runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    Pass,
    PassVlan,
    Exact,
}

impl Packet {
    pub fn label(self) -> &'static str {
        match self {
            Packet::Pass => "pass",
            Packet::PassVlan => "pass, one VLAN tag",
            Packet::Exact => "exact drop",
        }
    }
}

/// One program measured on one packet.
#[derive(Clone, Debug)]
pub struct PieceRow {
    pub family: Family,
    pub packet: Packet,
    pub what: String,
    pub above_floor: Summary,
    /// For pieces: above the parse-only program of the same round.
    pub above_parse: Option<Summary>,
    /// Above xdp-filter's cost above the floor, per round (whole programs only).
    pub ratio_to_xdp_filter: Option<Summary>,
}

#[derive(Clone, Debug)]
pub struct Pieces {
    pub repeat: u32,
    pub rounds: usize,
    pub rows: Vec<PieceRow>,
    pub baseline: Option<String>,
}

/// A program of an object in the eBPF crate's build directory, loaded with aya.
struct Reference {
    bpf: Ebpf,
}

impl Reference {
    fn load(name: &str, programs: &[&str]) -> Result<Self> {
        let path = Path::new(groundzero::BPF_OBJECTS_DIR).join(name);
        let object = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (built with the groundzero crate)",
                path.display()
            )
        })?;
        let mut bpf = EbpfLoader::new()
            .load(&object)
            .with_context(|| format!("loading {}", path.display()))?;
        for p in programs {
            let program: &mut Xdp = bpf
                .program_mut(p)
                .with_context(|| format!("{p} is missing from {}", path.display()))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("verifying {p} of {}", path.display()))?;
        }
        Ok(Self { bpf })
    }

    fn insert<const N: usize, V: aya::Pod>(
        &mut self,
        map: &str,
        key: [u8; N],
        value: V,
    ) -> Result<()> {
        let mut m: HashMap<_, [u8; N], V> = HashMap::try_from(
            self.bpf
                .map_mut(map)
                .with_context(|| format!("map {map}"))?,
        )?;
        m.insert(key, value, 0)?;
        Ok(())
    }

    /// Adds `addr` to the pieces' exact blocklist (values are `EntryStats`, 16 bytes) and to
    /// its slot table, in its home slot (the table is otherwise empty).
    fn block(&mut self, addr: IpAddr) -> Result<()> {
        use groundzero_common::slots::{self as sl, next_tag, SLOT_EMPTY, SLOT_LIVE};
        let live = next_tag(SLOT_EMPTY, SLOT_LIVE);
        match addr {
            IpAddr::V4(a) => {
                self.insert("block_v4", a.octets(), [0u64; 2])?;
                let slot = sl::SlotV4 {
                    tag: live,
                    key: a.octets(),
                    ..Default::default()
                };
                self.set(sl::BLOCK_SLOTS_V4, sl::home_v4(&a.octets()), slot)
            }
            IpAddr::V6(a) => {
                self.insert("block_v6", a.octets(), [0u64; 2])?;
                let slot = sl::SlotV6 {
                    tag: live,
                    key: a.octets(),
                    ..Default::default()
                };
                self.set(sl::BLOCK_SLOTS_V6, sl::home_v6(&a.octets()), slot)
            }
        }
    }

    fn set<V: aya::Pod>(&mut self, map: &str, index: u32, value: V) -> Result<()> {
        let mut m: aya::maps::Array<_, V> = aya::maps::Array::try_from(
            self.bpf
                .map_mut(map)
                .with_context(|| format!("map {map}"))?,
        )?;
        m.set(index, value, 0)?;
        Ok(())
    }

    fn test_run(&self, program: &str, packet: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let p: &Xdp = self
            .bpf
            .program(program)
            .with_context(|| format!("program {program}"))?
            .try_into()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration))
    }
}

/// The programs measured, in job order.
#[derive(Clone, Debug)]
enum Prog {
    Floor,
    Minimal,
    XdpFilter,
    Groundzero,
    Baseline,
    Piece(usize),
}

/// The function of piece `k` for `family`.
fn piece_program(k: usize, family: Family) -> String {
    let name = PIECES[k].0;
    match k {
        // The pieces that read a map have a program per family.
        2..=5 | 8 => format!("{name}_{}", if family == Family::V4 { "v4" } else { "v6" }),
        _ => name.to_string(),
    }
}

/// Loads groundzero (the embedded build, or `object`) with part 1's lists.
fn shield_with_lists(object: Option<&[u8]>) -> Result<Shield> {
    let mut shield = match object {
        Some(o) => Shield::load_object(ShieldOptions::default(), o)?,
        None => Shield::load(ShieldOptions::default())?,
    };
    for family in [Family::V4, Family::V6] {
        let s = sources(family);
        shield.block(parse_entry(&s.exact.to_string())?)?;
        shield.block(parse_entry(s.cidr_prefix)?)?;
        shield.allow(parse_entry(&s.allowed.to_string())?)?;
    }
    Ok(shield)
}

pub fn run(config: &Config) -> Result<Pieces> {
    let floor = Floor::load()?;
    let mut minimal = Reference::load("minimal", &["minimal"])?;
    let mut names: Vec<String> = [Family::V4, Family::V6]
        .iter()
        .flat_map(|&f| (0..PIECES.len()).map(move |k| piece_program(k, f)))
        .collect();
    names.sort();
    names.dedup();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pieces = Reference::load("pieces", &names)?;
    let mut xdp_filter = XdpFilter::load(None)?;
    let shield = shield_with_lists(None)?;
    let baseline_bytes = config.baseline_bytes()?;
    let baseline = baseline_bytes
        .as_deref()
        .map(|b| shield_with_lists(Some(b)))
        .transpose()
        .context("loading the baseline object")?;
    for family in [Family::V4, Family::V6] {
        let s = sources(family);
        if let IpAddr::V4(a) = s.exact {
            minimal.insert("minimal_block", a.octets(), 0u64)?;
        }
        pieces.block(s.exact)?;
        xdp_filter.block(s.exact)?;
    }

    struct Case {
        family: Family,
        packet: Packet,
        bytes: Vec<u8>,
    }
    let mut cases = Vec::new();
    for family in [Family::V4, Family::V6] {
        let s = sources(family);
        let pass = frame(s.pass);
        cases.push(Case {
            family,
            packet: Packet::PassVlan,
            bytes: craft::with_vlans(&pass, &[(0x8100, 100)]),
        });
        cases.push(Case {
            family,
            packet: Packet::Pass,
            bytes: pass,
        });
        cases.push(Case {
            family,
            packet: Packet::Exact,
            bytes: frame(s.exact),
        });
    }

    let mut jobs: Vec<(usize, Prog)> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        jobs.push((i, Prog::Floor));
        jobs.push((i, Prog::Piece(0)));
        if case.packet == Packet::PassVlan {
            continue;
        }
        if case.family == Family::V4 {
            jobs.push((i, Prog::Minimal));
        }
        jobs.extend([(i, Prog::XdpFilter), (i, Prog::Groundzero)]);
        if baseline.is_some() {
            jobs.push((i, Prog::Baseline));
        }
        let piece_set: &[usize] = if case.packet == Packet::Exact {
            &[3, 8, 4]
        } else {
            &[1, 2, 3, 8, 5, 6, 7]
        };
        jobs.extend(piece_set.iter().map(|&k| (i, Prog::Piece(k))));
    }

    let run_one = |case: &Case, prog: &Prog, repeat: u32| -> Result<(u32, Duration)> {
        let packet = &case.bytes;
        Ok(match prog {
            Prog::Floor => floor.test_run(packet, repeat)?,
            Prog::Minimal => minimal.test_run("minimal", packet, repeat)?,
            Prog::XdpFilter => xdp_filter.test_run(packet, repeat)?,
            Prog::Groundzero => {
                let (a, d) = shield.test_run_repeat(packet, repeat)?;
                (a as u32, d)
            }
            Prog::Baseline => {
                let (a, d) = baseline
                    .as_ref()
                    .expect("a baseline job only with a baseline")
                    .test_run_repeat(packet, repeat)?;
                (a as u32, d)
            }
            Prog::Piece(k) => pieces.test_run(&piece_program(*k, case.family), packet, repeat)?,
        })
    };

    // Every program gives the expected verdict (and the caches are warm).
    for (i, prog) in &jobs {
        let case = &cases[*i];
        let expected = match (prog, case.packet) {
            (Prog::Floor, _) | (Prog::Piece(0), _) => XDP_PASS,
            (_, Packet::Exact) => XDP_DROP,
            _ => XDP_PASS,
        };
        let (rc, _) = run_one(case, prog, 1000)?;
        ensure!(
            rc == expected,
            "{prog:?} returned {rc} on {:?} {:?}, expected {expected}",
            case.family,
            case.packet
        );
    }

    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    for round in 0..config.rounds {
        for j in order(jobs.len(), round) {
            let (i, prog) = &jobs[j];
            let (_, d) = run_one(&cases[*i], prog, config.repeat)?;
            ns[j].push(d.as_nanos() as f64);
        }
        crate::progress(&format!("pieces round {}/{}", round + 1, config.rounds));
    }

    let find = |i: usize, want: &dyn Fn(&Prog) -> bool| -> Option<&Vec<f64>> {
        jobs.iter()
            .position(|(c, p)| *c == i && want(p))
            .map(|j| &ns[j])
    };
    let minus =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let mut rows = Vec::new();
    for (j, (i, prog)) in jobs.iter().enumerate() {
        let case = &cases[*i];
        if matches!(prog, Prog::Floor) {
            continue;
        }
        let floor_ns = find(*i, &|p| matches!(p, Prog::Floor)).expect("a floor per case");
        let parse_ns = find(*i, &|p| matches!(p, Prog::Piece(0))).expect("a parse per case");
        let xf_ns = find(*i, &|p| matches!(p, Prog::XdpFilter));
        let above = minus(&ns[j], floor_ns);
        let what = match prog {
            Prog::Minimal => "minimal Rust/Aya: Ethernet + IPv4, one hash lookup, no counters",
            Prog::XdpFilter => "xdp-filter (xdpfilt_alw_ip)",
            Prog::Groundzero => "groundzero, this build (whole verdict)",
            Prog::Baseline => "groundzero, baseline build (whole verdict)",
            Prog::Piece(k) => PIECES[*k].1,
            Prog::Floor => unreachable!("the floor is no row"),
        }
        .to_string();
        let above_parse = match prog {
            Prog::Piece(k) if *k > 0 => Some(Summary::of(&minus(&ns[j], parse_ns))),
            _ => None,
        };
        let ratio = match (prog, xf_ns) {
            (Prog::Groundzero | Prog::Baseline | Prog::Minimal, Some(x)) => Some(Summary::of(
                &above
                    .iter()
                    .zip(x.iter().zip(floor_ns))
                    .map(|(g, (x, f))| g / (x - f).max(0.5))
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        };
        rows.push(PieceRow {
            family: case.family,
            packet: case.packet,
            what,
            above_floor: Summary::of(&above),
            above_parse,
            ratio_to_xdp_filter: ratio,
        });
    }
    Ok(Pieces {
        repeat: config.repeat,
        rounds: config.rounds,
        rows,
        baseline: config
            .baseline_object
            .as_ref()
            .map(|p| p.display().to_string()),
    })
}
