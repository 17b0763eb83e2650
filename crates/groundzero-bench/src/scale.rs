//! Part 2: the cost per packet, kernel memory and load time as the lists grow, and (part 4) the
//! cost of a Prometheus scrape at each size.
//!
//! Filler entries come from ranges no packet is ever sent to: 240.0.0.0/4 (reserved) for IPv4
//! and 2001:2::/48 (benchmarking) for IPv6. The scale test packets' sources are drawn from the
//! same ranges, so a lookup walks a trie of realistic depth; these packets only ever exist inside
//! `BPF_PROG_TEST_RUN`.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    time::Instant,
};

use anyhow::{ensure, Result};
use groundzero::{IpNet, Shield, ShieldOptions};
use groundzero_daemon::metrics;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    handmade::BareLookup,
    per_packet::{frame, order, Family, Verdict, XDP_PASS},
    progs::Floor,
    source_walk::{self, SourceWalk},
    stats::{median, quantile, Summary},
    sys, Config,
};

/// splitmix64: small, fast, seeded; the same lists on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random IPv4 address in 240.0.0.0/4 (not the broadcast address).
fn v4_in_reserved(rng: &mut Rng) -> Ipv4Addr {
    loop {
        let a = 0xf000_0000 | (rng.next() as u32 & 0x0fff_ffff);
        if a != u32::MAX {
            return Ipv4Addr::from(a);
        }
    }
}

/// A random IPv6 address in 2001:2::/48.
fn v6_in_bench(rng: &mut Rng) -> Ipv6Addr {
    let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) & ((1u128 << 80) - 1);
    Ipv6Addr::from((0x2001_0002_0000u128 << 80) | low)
}

fn random_addr(family: Family, rng: &mut Rng) -> IpAddr {
    match family {
        Family::V4 => v4_in_reserved(rng).into(),
        Family::V6 => v6_in_bench(rng).into(),
    }
}

/// A random address inside `net`.
fn addr_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix_len());
            let mask = if host_bits == 0 {
                0
            } else {
                u32::MAX >> (32 - host_bits)
            };
            Ipv4Addr::from(u32::from(n.network()) | (rng.next() as u32 & mask)).into()
        }
        IpNet::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix_len());
            let mask = if host_bits == 0 {
                0
            } else {
                u128::MAX >> (128 - host_bits)
            };
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            Ipv6Addr::from(u128::from(n.network()) | (r & mask)).into()
        }
    }
}

fn addr_bits(a: &IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The lists of one family, at their largest size; a level uses a prefix of each.
pub struct Lists {
    pub family: Family,
    /// Distinct host entries; `[0]` is the exact-drop test source.
    pub exact: Vec<IpNet>,
    /// Distinct prefixes (never host-length); `[0]` covers the prefix-drop test source.
    pub cidr: Vec<IpNet>,
    exact_set: HashSet<u128>,
    /// (prefix length, network bits) of every prefix, to test coverage.
    cidr_set: HashSet<(u8, u128)>,
    cidr_lengths: Vec<u8>,
}

impl Lists {
    pub fn generate(family: Family, exact: usize, cidr: usize, rng: &mut Rng) -> Self {
        let mut exact_set = HashSet::with_capacity(exact);
        let mut exact_list = Vec::with_capacity(exact);
        while exact_list.len() < exact {
            let a = random_addr(family, rng);
            if exact_set.insert(addr_bits(&a)) {
                exact_list.push(IpNet::from(a));
            }
        }
        // IPv4 prefixes /20../31 inside 240.0.0.0/4; IPv6 /64../127 inside 2001:2::/48.
        let (min_len, max_len) = match family {
            Family::V4 => (20u8, 31u8),
            Family::V6 => (64u8, 127u8),
        };
        let mut cidr_set = HashSet::with_capacity(cidr);
        let mut cidr_list = Vec::with_capacity(cidr);
        while cidr_list.len() < cidr {
            let len = min_len + rng.below(u64::from(max_len - min_len + 1)) as u8;
            let net = match random_addr(family, rng) {
                IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc()),
                IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc()),
            };
            if cidr_set.insert((len, addr_bits(&net.network()))) {
                cidr_list.push(net);
            }
        }
        Self {
            family,
            exact: exact_list,
            cidr: cidr_list,
            exact_set,
            cidr_set,
            cidr_lengths: (min_len..=max_len).collect(),
        }
    }

    fn covered(&self, a: &IpAddr) -> bool {
        let bits = addr_bits(a);
        let width = match self.family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        self.cidr_lengths.iter().any(|&len| {
            let host = width - u32::from(len);
            let masked = if host >= 128 {
                0
            } else {
                (bits >> host) << host
            };
            self.cidr_set.contains(&(len, masked))
        })
    }

    /// An address on no list (at the largest sizes): the full verdict, then a pass.
    fn pass_source(&self, rng: &mut Rng) -> IpAddr {
        loop {
            let a = random_addr(self.family, rng);
            if !self.exact_set.contains(&addr_bits(&a)) && !self.covered(&a) {
                return a;
            }
        }
    }

    /// An address inside one of the first `m` prefixes and not an exact entry.
    fn cidr_source(&self, m: usize, rng: &mut Rng, index: Option<usize>) -> IpAddr {
        loop {
            let i = index.unwrap_or_else(|| rng.below(m as u64) as usize);
            let a = addr_in(&self.cidr[i], rng);
            if !self.exact_set.contains(&addr_bits(&a)) {
                return a;
            }
        }
    }
}

/// ns per packet at one list size, for one family and verdict.
#[derive(Clone, Debug)]
pub struct Point {
    pub exact: usize,
    pub cidr: usize,
    pub family: Family,
    pub verdict: Verdict,
    pub above: Summary,
    /// Above the floor, ÷ the one-entry reference shield above the floor, per round (pass and
    /// exact drop only).
    pub ratio_to_one: Option<Summary>,
    pub cold: Cold,
}

/// Distinct sources, one run each (`repeat = 1`): the map lookups are not kept warm by a million
/// repeats of the same packet. Medians over the samples.
#[derive(Clone, Copy, Debug)]
pub struct Cold {
    pub samples: usize,
    pub floor: f64,
    /// Median of groundzero minus median of the floor.
    pub above: f64,
    pub groundzero_p90: f64,
    /// The hand-assembled bare lookup ([`crate::handmade::BareLookup`]) on the same packets,
    /// its map holding the same exact entries: median minus the floor's (pass and exact drop).
    pub bare_above: Option<f64>,
    /// The same with the bare lookup's map not preallocated (`BPF_F_NO_PREALLOC`).
    pub bare_unpreallocated_above: Option<f64>,
    /// Distinct sources back to back in one test run (pass and exact drop, no prefixes).
    pub walk: Option<Walk>,
}

/// A flood from many sources inside one `BPF_PROG_TEST_RUN` ([`crate::source_walk`]): each
/// packet has the next source of a random walk through the list (exact drops) or through
/// addresses on no list (passes), and the program's own state stays as warm as under NAPI.
/// ns per packet above the walk into the floor program, median over rounds.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    /// Distinct sources in the walk (each packet of a run has the next one).
    pub sources: usize,
    pub packets_per_run: u32,
    pub rounds: usize,
    pub groundzero: Summary,
    pub bare: Summary,
    pub bare_unpreallocated: Summary,
}

#[derive(Clone, Debug)]
pub struct MapMemory {
    pub exact: usize,
    pub cidr: usize,
    pub map: String,
    pub capacity: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMethod {
    /// `Shield::block_all`.
    Batched,
    /// `Shield::block` in a loop.
    OneByOne,
    /// `BPF_MAP_UPDATE_BATCH` alone into a bare map of the same shape: the kernel's share.
    KernelOnly,
    /// `Shield::load` of pins that hold the entries, by their owner (a daemon's restart): it
    /// rebuilds the exact slot tables from the hashes.
    Reload,
}

#[derive(Clone, Debug)]
pub struct LoadTime {
    pub family: Family,
    pub method: LoadMethod,
    pub entries: usize,
    pub seconds: Summary,
}

#[derive(Clone, Debug)]
pub struct Scrape {
    pub exact: usize,
    pub cidr: usize,
    /// Block entries in the kernel maps, both families.
    pub entries: usize,
    pub seconds: Summary,
    /// The part the daemon does holding its lock (everything but reading the lists).
    pub locked_seconds: Summary,
    pub output_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Scale {
    pub repeat: u32,
    pub rounds: usize,
    pub exact_levels: Vec<usize>,
    pub cidr_levels: Vec<usize>,
    pub points: Vec<Point>,
    pub memory: Vec<MapMemory>,
    pub loads: Vec<LoadTime>,
    pub scrapes: Vec<Scrape>,
    /// The memory hierarchy's latencies, measured right after the levels.
    pub hierarchy: Option<crate::dram::Hierarchy>,
}

pub fn run(config: &Config) -> Result<Scale> {
    let max_exact = *config.exact_levels.iter().max().unwrap();
    let max_cidr = *config.cidr_levels.iter().max().unwrap();
    let mut rng = Rng::new(0x67_7a_62_65_6e_63_68);
    let lists = [
        Lists::generate(
            Family::V4,
            max_exact.max(config.load_entries),
            max_cidr,
            &mut rng,
        ),
        Lists::generate(
            Family::V6,
            max_exact.max(config.load_entries),
            max_cidr,
            &mut rng,
        ),
    ];
    crate::progress("scale: lists generated");

    let floor = Floor::load()?;
    let before: HashSet<u32> = sys::process_maps()?.keys().copied().collect();
    let mut shield = Shield::load(ShieldOptions::default())?;
    let shield_maps: Vec<u32> = sys::process_maps()?
        .into_keys()
        .filter(|id| !before.contains(id))
        .collect();

    // The one-entry shield, measured in the same rounds as every level: the list-size ratio is
    // taken side by side, not between measurements minutes apart.
    let mut reference = Shield::load(ShieldOptions::default())?;
    for l in &lists {
        reference.block(l.exact[0])?;
    }

    let pass: Vec<IpAddr> = lists.iter().map(|l| l.pass_source(&mut rng)).collect();
    let cidr_hit: Vec<IpAddr> = lists
        .iter()
        .map(|l| l.cidr_source(1, &mut rng, Some(0)))
        .collect();

    let mut out = Scale {
        repeat: config.repeat,
        rounds: config.scale_rounds,
        exact_levels: config.exact_levels.clone(),
        cidr_levels: config.cidr_levels.clone(),
        points: Vec::new(),
        memory: Vec::new(),
        loads: Vec::new(),
        scrapes: Vec::new(),
        hierarchy: None,
    };
    // The least lookup there is, with the same exact entries (added level by level below).
    let capacity = ShieldOptions::default().exact_capacity;
    let bare = [
        BareLookup::load(Family::V4, capacity, true)?,
        BareLookup::load(Family::V6, capacity, true)?,
    ];
    let bare_unpreallocated = [
        BareLookup::load(Family::V4, capacity, false)?,
        BareLookup::load(Family::V6, capacity, false)?,
    ];
    let mut exact_in = 0;
    for &n in &config.exact_levels {
        for ((l, b), u) in lists.iter().zip(&bare).zip(&bare_unpreallocated) {
            shield.block_all(&l.exact[exact_in..n])?;
            let keys: Vec<u8> = l.exact[exact_in..n]
                .iter()
                .flat_map(|e| match e.addr() {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                })
                .collect();
            b.insert(&keys)?;
            u.insert(&keys)?;
        }
        exact_in = n;
        let mut cidr_in = 0;
        for &m in &config.cidr_levels {
            for l in &lists {
                shield.block_all(&l.cidr[cidr_in..m])?;
            }
            cidr_in = m;
            // Cases of this level.
            struct Case {
                family: Family,
                verdict: Verdict,
                packet: Vec<u8>,
                cold: Vec<Vec<u8>>,
            }
            let mut cases = Vec::new();
            for (fi, l) in lists.iter().enumerate() {
                let mut verdicts = vec![Verdict::Pass, Verdict::ExactDrop];
                if m > 0 {
                    verdicts.push(Verdict::CidrDrop);
                }
                for verdict in verdicts {
                    let (src, cold): (IpAddr, Vec<IpAddr>) = match verdict {
                        Verdict::Pass => (
                            pass[fi],
                            (0..config.cold_samples)
                                .map(|_| l.pass_source(&mut rng))
                                .collect(),
                        ),
                        Verdict::ExactDrop => (
                            l.exact[0].addr(),
                            (0..config.cold_samples)
                                .map(|_| l.exact[rng.below(n as u64) as usize].addr())
                                .collect(),
                        ),
                        _ => (
                            cidr_hit[fi],
                            (0..config.cold_samples)
                                .map(|_| l.cidr_source(m, &mut rng, None))
                                .collect(),
                        ),
                    };
                    cases.push(Case {
                        family: l.family,
                        verdict,
                        packet: frame(src),
                        cold: cold.into_iter().map(frame).collect(),
                    });
                }
            }
            for case in &cases {
                let (action, _) = shield.test_run_repeat(&case.packet, 1000)?;
                ensure!(
                    action == case.verdict.action(),
                    "groundzero gave {action:?} for {:?} {:?} at {n}/{m}",
                    case.family,
                    case.verdict
                );
            }
            // Program 0 the floor, 1 this level's shield, 2 the one-entry reference (for the
            // verdicts it gives the same way: pass and exact drop).
            let mut jobs = Vec::new();
            for (i, case) in cases.iter().enumerate() {
                jobs.push((i, 0));
                jobs.push((i, 1));
                if case.verdict != Verdict::CidrDrop {
                    jobs.push((i, 2));
                }
            }
            let mut ns = vec![[Vec::new(), Vec::new(), Vec::new()]; cases.len()];
            for round in 0..config.scale_rounds {
                for j in order(jobs.len(), round) {
                    let (i, program) = jobs[j];
                    let d = match program {
                        0 => floor.test_run(&cases[i].packet, config.repeat)?.1,
                        1 => shield.test_run_repeat(&cases[i].packet, config.repeat)?.1,
                        _ => {
                            reference
                                .test_run_repeat(&cases[i].packet, config.repeat)?
                                .1
                        }
                    };
                    ns[i][program].push(d.as_nanos() as f64);
                }
            }
            let walks = if m == 0 {
                walk(
                    config,
                    &cases
                        .iter()
                        .map(|c| (c.family, c.verdict))
                        .collect::<Vec<_>>(),
                    &lists,
                    n,
                    &mut rng,
                    &floor,
                    &shield,
                    [&bare, &bare_unpreallocated],
                )?
            } else {
                vec![None; cases.len()]
            };
            for ((case, [f, g, r]), walk) in cases.iter().zip(&ns).zip(walks) {
                let (mut cf, mut cg, mut cb, mut cu) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let family = usize::from(case.family == Family::V6);
                for packet in &case.cold {
                    if case.verdict != Verdict::CidrDrop {
                        for (b, out) in [
                            (&bare[family], &mut cb),
                            (&bare_unpreallocated[family], &mut cu),
                        ] {
                            let (rc, d) = b.test_run(packet, 1)?;
                            ensure!(
                                rc == if case.verdict == Verdict::Pass {
                                    XDP_PASS
                                } else {
                                    1
                                },
                                "the bare lookup returned {rc} for a {:?} {:?} sample",
                                case.family,
                                case.verdict
                            );
                            out.push(d.as_nanos() as f64);
                        }
                    }
                    let (rc, d) = floor.test_run(packet, 1)?;
                    ensure!(rc == XDP_PASS);
                    cf.push(d.as_nanos() as f64);
                    let (action, d) = shield.test_run_repeat(packet, 1)?;
                    ensure!(
                        action == case.verdict.action(),
                        "groundzero gave {action:?} for a {:?} {:?} sample",
                        case.family,
                        case.verdict
                    );
                    cg.push(d.as_nanos() as f64);
                }
                cg.sort_by(|a, b| a.total_cmp(b));
                let above: Vec<f64> = g.iter().zip(f).map(|(g, f)| g - f).collect();
                let ratio_to_one = (!r.is_empty()).then(|| {
                    let ratios: Vec<f64> = g
                        .iter()
                        .zip(r)
                        .zip(f)
                        .map(|((g, r), f)| (g - f) / (r - f).max(0.5))
                        .collect();
                    Summary::of(&ratios)
                });
                out.points.push(Point {
                    exact: n,
                    cidr: m,
                    family: case.family,
                    verdict: case.verdict,
                    above: Summary::of(&above),
                    ratio_to_one,
                    cold: Cold {
                        samples: cg.len(),
                        floor: median(&cf),
                        above: median(&cg) - median(&cf),
                        groundzero_p90: quantile(&cg, 0.9),
                        bare_above: (!cb.is_empty()).then(|| median(&cb) - median(&cf)),
                        bare_unpreallocated_above: (!cu.is_empty())
                            .then(|| median(&cu) - median(&cf)),
                        walk,
                    },
                });
            }
            let maps: BTreeMap<u32, sys::MapMemory> = sys::process_maps()?;
            for id in &shield_maps {
                if let Some(map) = maps.get(id) {
                    out.memory.push(MapMemory {
                        exact: n,
                        cidr: m,
                        map: map.name.clone(),
                        capacity: map.max_entries,
                        bytes: map.bytes,
                    });
                }
            }
            if m == 0 || m == max_cidr {
                out.scrapes
                    .push(scrape(&shield, n, m, config.scrape_rounds)?);
            }
            crate::progress(&format!("scale: {n} exact, {m} prefixes per family"));
        }
        // Back to no prefixes for the next exact level.
        for l in &lists {
            shield.unblock_all(&l.cidr[..cidr_in])?;
        }
    }
    // The memory latencies in the same run, on the same CPU, while the maps are still loaded.
    out.hierarchy = Some(crate::dram::measure(config.smoke)?);
    drop(shield);
    drop(reference);
    drop(bare);
    drop(bare_unpreallocated);
    // The kernel frees a dropped shield's maps (hundreds of MiB at these sizes) in deferred
    // work after the last reference goes; let that finish before timing anything else.
    settle(config, 4);

    out.loads = load_times(config, &lists)?;
    Ok(out)
}

/// The flood from many sources of every (family, verdict) in `cases` that is a pass or an exact
/// drop, at `n` exact entries: a walk through `config.walk_sources` sources (at most `n` for
/// drops), one source per packet, into the floor, groundzero and both bare lookups, in rotated
/// order, `config.walk_rounds` rounds.
#[allow(clippy::too_many_arguments)]
fn walk(
    config: &Config,
    cases: &[(Family, Verdict)],
    lists: &[Lists; 2],
    n: usize,
    rng: &mut Rng,
    floor: &Floor,
    shield: &Shield,
    bare: [&[BareLookup; 2]; 2],
) -> Result<Vec<Option<Walk>>> {
    let shield_fd = source_walk::program_fd_by_id(shield.program_id()?)?;
    let mut out = Vec::new();
    for &(family, verdict) in cases {
        if !matches!(verdict, Verdict::Pass | Verdict::ExactDrop) {
            out.push(None);
            continue;
        }
        let l = &lists[usize::from(family == Family::V6)];
        // A power of two (the walker wraps with a mask): the largest that fits the list for
        // drops, each entry once, in random order.
        let cap = config.walk_sources.min(if verdict == Verdict::ExactDrop {
            n
        } else {
            usize::MAX
        });
        let count = 1usize << cap.ilog2();
        let addrs: Vec<IpAddr> = match verdict {
            Verdict::ExactDrop => {
                let mut picked: Vec<usize> = (0..n).collect();
                // Fisher-Yates, the first `count` only.
                for i in 0..count {
                    let j = i + rng.below((n - i) as u64) as usize;
                    picked.swap(i, j);
                }
                picked[..count].iter().map(|&i| l.exact[i].addr()).collect()
            }
            _ => (0..count).map(|_| l.pass_source(rng)).collect(),
        };
        let octets: Vec<Vec<u8>> = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            })
            .collect();
        let walker = SourceWalk::load(family, &octets)?;
        let packet = frame(addrs[0]);
        // At least one walk through every source per run, and enough packets that the
        // syscall's own cost is spread thin.
        let repeat = count.max(1 << 16) as u32;
        let fam = usize::from(family == Family::V6);
        let targets = [
            floor.fd(),
            shield_fd.as_fd(),
            bare[0][fam].prog_fd(),
            bare[1][fam].prog_fd(),
        ];
        for (i, target) in targets.iter().enumerate() {
            walker.aim(*target)?;
            let (rc, _) = walker.run(&packet, count as u32)?;
            let expected = if i == 0 || verdict == Verdict::Pass {
                XDP_PASS
            } else {
                1
            };
            ensure!(
                rc == expected,
                "the walk into program {i} gave {rc} for {family:?} {verdict:?}, not {expected}"
            );
        }
        let mut ns = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for round in 0..config.walk_rounds {
            for i in order(targets.len(), round) {
                walker.aim(targets[i])?;
                let (_, d) = walker.run(&packet, repeat)?;
                ns[i].push(d.as_nanos() as f64);
            }
        }
        let above = |i: usize| {
            Summary::of(
                &ns[i]
                    .iter()
                    .zip(&ns[0])
                    .map(|(t, f)| t - f)
                    .collect::<Vec<_>>(),
            )
        };
        crate::progress(&format!(
            "walk: {n} entries, {family:?} {verdict:?}, {count} sources: groundzero {:.0} ns, \
             bare {:.0} ns, bare not preallocated {:.0} ns above the floor",
            above(1).median,
            above(2).median,
            above(3).median
        ));
        out.push(Some(Walk {
            sources: count,
            packets_per_run: repeat,
            rounds: config.walk_rounds,
            groundzero: above(1),
            bare: above(2),
            bare_unpreallocated: above(3),
        }));
    }
    Ok(out)
}

/// Waits `quarter_seconds` × 250 ms (less in a smoke run) for deferred kernel work, such as
/// freeing the maps of a shield just dropped, to finish before the next timing.
fn settle(config: &Config, quarter_seconds: u64) {
    let ms = if config.smoke {
        20
    } else {
        250 * quarter_seconds
    };
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// One scrape as the daemon's `/metrics` does it: the lists read through a `ListReader` (no
/// lock held), then, under the lock, the rest of the snapshot; then the encoding.
fn scrape(shield: &Shield, exact: usize, cidr: usize, rounds: usize) -> Result<Scrape> {
    let (mut seconds, mut locked) = (Vec::new(), Vec::new());
    let mut output_bytes = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let reader = shield.list_reader()?;
        let (blocked, allowed) = (reader.blocked()?, reader.allowed()?);
        let lock_start = Instant::now();
        let snapshot = metrics::MetricsSnapshot::from_shield_and_lists(
            shield,
            &blocked,
            &allowed,
            metrics::DEFAULT_TOP_N,
        )?;
        locked.push(lock_start.elapsed().as_secs_f64());
        let text = metrics::encode(&snapshot);
        seconds.push(start.elapsed().as_secs_f64());
        output_bytes = text.len();
    }
    Ok(Scrape {
        exact,
        cidr,
        entries: 2 * (exact + cidr),
        seconds: Summary::of(&seconds),
        locked_seconds: Summary::of(&locked),
        output_bytes,
    })
}

/// Pins a shield holding `entries`, lets it go, and times the next load of those pins (its
/// owner's: the slot tables are rebuilt from the hashes). The pins are removed after.
fn reload_time(entries: &[IpNet]) -> Result<f64> {
    groundzero::pins::ensure_bpffs()?;
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/gz-bench-reload-{}",
        std::process::id()
    ));
    let options = ShieldOptions {
        pin_dir: Some(dir.clone()),
        ..ShieldOptions::default()
    };
    let timed = (|| -> Result<f64> {
        let mut shield = Shield::load(options.clone())?;
        shield.block_all(entries)?;
        drop(shield);
        let start = Instant::now();
        let shield = Shield::load(options.clone())?;
        let seconds = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            shield.blocked()?.len() == entries.len(),
            "the reloaded shield does not hold the {} entries",
            entries.len()
        );
        Ok(seconds)
    })();
    groundzero::pins::remove_all(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    timed
}

/// Loading `config.load_entries` exact entries into a fresh shield: batched (`block_all`) and
/// one `block` call per entry, and the kernel's batch update alone, alternating.
fn load_times(config: &Config, lists: &[Lists; 2]) -> Result<Vec<LoadTime>> {
    const METHODS: [LoadMethod; 4] = [
        LoadMethod::Batched,
        LoadMethod::OneByOne,
        LoadMethod::KernelOnly,
        LoadMethod::Reload,
    ];
    let n = config.load_entries;
    let mut out = Vec::new();
    for l in lists {
        let entries = &l.exact[..n];
        let (keys, key_size): (Vec<u8>, usize) = match l.family {
            Family::V4 => (
                entries
                    .iter()
                    .flat_map(|e| match e.addr() {
                        IpAddr::V4(a) => a.octets().to_vec(),
                        IpAddr::V6(_) => unreachable!("an IPv4 list"),
                    })
                    .collect(),
                4,
            ),
            Family::V6 => (
                entries
                    .iter()
                    .flat_map(|e| match e.addr() {
                        IpAddr::V6(a) => a.octets().to_vec(),
                        IpAddr::V4(_) => unreachable!("an IPv6 list"),
                    })
                    .collect(),
                16,
            ),
        };
        let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for rep in 0..config.load_repeats {
            for k in order(METHODS.len(), rep) {
                settle(config, 1);
                let seconds = match METHODS[k] {
                    LoadMethod::KernelOnly => crate::progs::raw_batch_load(
                        &keys,
                        key_size,
                        ShieldOptions::default().exact_capacity,
                    )?
                    .as_secs_f64(),
                    LoadMethod::Reload => reload_time(entries)?,
                    method => {
                        let mut shield = Shield::load(ShieldOptions::default())?;
                        let start = Instant::now();
                        if method == LoadMethod::Batched {
                            shield.block_all(entries)?;
                        } else {
                            for &net in entries {
                                shield.block(net)?;
                            }
                        }
                        let seconds = start.elapsed().as_secs_f64();
                        drop(shield);
                        seconds
                    }
                };
                times[k].push(seconds);
                crate::progress(&format!(
                    "load: {} {} entries {:?}: {:.2} s",
                    l.family.label(),
                    n,
                    METHODS[k],
                    seconds
                ));
            }
        }
        for (k, t) in times.iter().enumerate() {
            out.push(LoadTime {
                family: l.family,
                method: METHODS[k],
                entries: n,
                seconds: Summary::of(t),
            });
        }
    }
    Ok(out)
}
