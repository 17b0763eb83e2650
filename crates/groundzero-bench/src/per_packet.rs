//! Part 1: cost per packet with `BPF_PROG_TEST_RUN`, groundzero against the floor (a program
//! that only returns XDP_PASS) and against xdp-filter, on the same packets, side by side.

use std::net::IpAddr;

use anyhow::{ensure, Result};
use groundzero::{parse_entry, Action, Shield, ShieldOptions};
use groundzero_lab::craft;

use crate::{
    progs::{Floor, XdpFilter},
    stats::Summary,
    Config,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// No list matches: the full verdict (allowlist, exact and prefix lookups) and a pass.
    Pass,
    ExactDrop,
    CidrDrop,
    Allowlisted,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass (no match)",
            Verdict::ExactDrop => "drop, exact address",
            Verdict::CidrDrop => "drop, prefix",
            Verdict::Allowlisted => "pass, allowlisted",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::ExactDrop => "exact drop",
            Verdict::CidrDrop => "CIDR drop",
            Verdict::Allowlisted => "allowlisted",
        }
    }

    pub fn action(self) -> Action {
        match self {
            Verdict::ExactDrop | Verdict::CidrDrop => Action::Drop,
            Verdict::Pass | Verdict::Allowlisted => Action::Pass,
        }
    }
}

/// XDP return codes.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// One case measured: ns per packet, each a summary over rounds.
#[derive(Clone, Debug)]
pub struct Row {
    pub family: Family,
    pub verdict: Verdict,
    pub floor: Summary,
    pub groundzero: Summary,
    /// groundzero minus the floor of the same round.
    pub groundzero_above: Summary,
    pub xdp_filter: Option<Summary>,
    pub xdp_filter_above: Option<Summary>,
    /// (groundzero − floor) / (xdp-filter − floor), per round.
    pub ratio: Option<Summary>,
    /// groundzero holding only what xdp-filter holds (the one exact address per family; empty
    /// allowlist and prefix tries), above the floor.
    pub same_lists_above: Option<Summary>,
    /// The full verdict with journey tracing sampling 1 in [`SAMPLED_EVERY`] packets, and every
    /// packet, above the floor (journey events drained by a thread meanwhile).
    pub traced_sampled_above: Option<Summary>,
    pub traced_all_above: Option<Summary>,
    /// The full verdict with a capture running whose filter admits nothing here (a source
    /// prefix no case is in), capturing at the default rate (1000 packets/s, so nearly every
    /// packet is refused by the bucket), and capturing every packet (perf buffer drained by a
    /// thread), above the floor.
    pub capture_idle_above: Option<Summary>,
    pub capture_rate_above: Option<Summary>,
    pub capture_all_above: Option<Summary>,
}

/// Bytes of each packet the "capturing" cases copy.
pub const CAPTURE_SNAPLEN: u32 = 64;

/// Journey tracing's "sampled" setting in the overhead measurement.
pub const SAMPLED_EVERY: u32 = 64;

#[derive(Clone, Debug)]
pub struct PerPacket {
    pub repeat: u32,
    pub rounds: usize,
    pub rows: Vec<Row>,
    pub frame_len_v4: usize,
    pub frame_len_v6: usize,
    /// Journey events the drain threads read, and how many the traced runs should have made.
    pub journey_events: u64,
    pub events_expected: u64,
    /// Records the capture drain threads read, and what the kernel counted as lost (over the
    /// rate, or a full perf buffer).
    pub capture_records: u64,
    pub capture_lost: u64,
}

/// Reads a capture's perf buffers until told to stop, so "capturing every packet" pays for
/// real perf writes; returns the records read and the losses.
pub struct CaptureDrain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl CaptureDrain {
    pub fn start(shield: &mut Shield, filter: &groundzero::capture::CaptureFilter) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let mut reader = shield.start_capture(filter)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += reader
                    .poll(std::time::Duration::from_millis(5))
                    .map_or(0, |r| r.len() as u64);
            }
            n += reader
                .poll(std::time::Duration::ZERO)
                .map_or(0, |r| r.len() as u64);
            let lost = reader.stop().map_or(0, |l| l.rate_limited + l.buffer_full);
            (n, lost)
        });
        Ok(CaptureDrain {
            stop,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map_or((0, 0), |t| t.join().unwrap_or((0, 0)))
    }
}

/// Reads a traced shield's journey ring buffer until told to stop, so the measurement pays for
/// real ring writes (a full ring would make `bpf_ringbuf_output` fail early, and cheaply).
pub struct Drain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Drain {
    pub fn start(shield: &mut Shield) -> Result<Drain> {
        use std::sync::atomic::Ordering;
        let mut events = shield.journey_events()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let got = events.drain(|_| {}) as u64;
                n += got;
                if got == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            n + events.drain(|_| {}) as u64
        });
        Ok(Drain {
            stop,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

/// The comparison state: one exact block, one blocked prefix and one allowlisted address inside
/// it, per family. xdp-filter gets the same exact address (it has no prefixes or allowlist).
pub struct Sources {
    pub pass: IpAddr,
    pub exact: IpAddr,
    pub cidr_prefix: &'static str,
    pub cidr_hit: IpAddr,
    pub allowed: IpAddr,
}

pub fn sources(family: Family) -> Sources {
    match family {
        Family::V4 => Sources {
            pass: "198.19.0.1".parse().unwrap(),
            exact: "198.18.0.10".parse().unwrap(),
            cidr_prefix: "198.18.128.0/24",
            cidr_hit: "198.18.128.5".parse().unwrap(),
            allowed: "198.18.128.7".parse().unwrap(),
        },
        Family::V6 => Sources {
            pass: "2001:2:0:1::1".parse().unwrap(),
            exact: "2001:2::10".parse().unwrap(),
            cidr_prefix: "2001:2:0:8000::/64",
            cidr_hit: "2001:2:0:8000::5".parse().unwrap(),
            allowed: "2001:2:0:8000::7".parse().unwrap(),
        },
    }
}

/// A UDP frame from `src` with an 18-byte payload: 60 bytes for IPv4 (the Ethernet minimum
/// without FCS), 80 for IPv6.
pub fn frame(src: IpAddr) -> Vec<u8> {
    match src {
        IpAddr::V4(a) => craft::udp4(a, &[0u8; 18]),
        IpAddr::V6(a) => craft::udp6(a, &[0u8; 18]),
    }
}

/// The order in which round `round` measures `n` things: rotated each round and reversed every
/// other round, so no case always runs first or right after the same neighbour.
pub fn order(n: usize, round: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| (i + round) % n).collect();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

pub fn run(config: &Config) -> Result<PerPacket> {
    let floor = Floor::load()?;
    let mut shield = Shield::load(ShieldOptions::default())?;
    let mut same_lists = Shield::load(ShieldOptions::default())?;
    let mut xdp_filter = XdpFilter::load(None)?;
    // The shield as measured, twice more with journey tracing on (XDP side: sampling, the ring
    // buffer event and the metadata tag; the observers never run under BPF_PROG_TEST_RUN).
    let mut sampled = Shield::load(ShieldOptions::default())?;
    let mut traced = Shield::load(ShieldOptions::default())?;
    let any = groundzero::journey::parse_filter("any").map_err(anyhow::Error::msg)?;
    sampled.set_sampling(SAMPLED_EVERY, any)?;
    traced.set_sampling(1, any)?;
    // Three more with a capture running: admitting nothing, at the default rate, everything.
    let mut capture_idle = Shield::load(ShieldOptions::default())?;
    let mut capture_rate = Shield::load(ShieldOptions::default())?;
    let mut capture_all = Shield::load(ShieldOptions::default())?;
    let families = [Family::V4, Family::V6];
    for family in families {
        let s = sources(family);
        for full in [
            &mut shield,
            &mut sampled,
            &mut traced,
            &mut capture_idle,
            &mut capture_rate,
            &mut capture_all,
        ] {
            full.block(parse_entry(&s.exact.to_string())?)?;
            full.block(parse_entry(s.cidr_prefix)?)?;
            full.allow(parse_entry(&s.allowed.to_string())?)?;
        }
        same_lists.block(parse_entry(&s.exact.to_string())?)?;
        xdp_filter.block(s.exact)?;
    }
    let drains = [Drain::start(&mut sampled)?, Drain::start(&mut traced)?];
    let every = groundzero::capture::CaptureFilter {
        passes: true,
        snaplen: CAPTURE_SNAPLEN,
        ..Default::default()
    };
    let capture_drains = [
        CaptureDrain::start(
            &mut capture_idle,
            &groundzero::capture::CaptureFilter {
                // TEST-NET-3: no case's source is in it, so every packet is refused by the filter.
                source: Some(parse_entry("203.0.113.0/24")?),
                ..every.clone()
            },
        )?,
        CaptureDrain::start(&mut capture_rate, &every)?,
        CaptureDrain::start(
            &mut capture_all,
            &groundzero::capture::CaptureFilter {
                rate_pps: u32::MAX,
                ..every.clone()
            },
        )?,
    ];

    struct Case {
        family: Family,
        verdict: Verdict,
        packet: Vec<u8>,
        /// xdp-filter's expected return code, where the case means something to it.
        xdp_filter: Option<u32>,
    }
    let mut cases = Vec::new();
    for family in families {
        let s = sources(family);
        for (verdict, src, xf) in [
            (Verdict::Pass, s.pass, Some(XDP_PASS)),
            (Verdict::ExactDrop, s.exact, Some(XDP_DROP)),
            (Verdict::CidrDrop, s.cidr_hit, None),
            (Verdict::Allowlisted, s.allowed, None),
        ] {
            cases.push(Case {
                family,
                verdict,
                packet: frame(src),
                xdp_filter: xf,
            });
        }
    }

    // Every program gives the expected verdict on every packet (and the caches are warm).
    for case in &cases {
        let (action, _) = shield.test_run_repeat(&case.packet, 1000)?;
        ensure!(
            action == case.verdict.action(),
            "groundzero gave {action:?} for {:?} {:?}",
            case.family,
            case.verdict
        );
        ensure!(floor.test_run(&case.packet, 1000)?.0 == XDP_PASS);
        if case.xdp_filter.is_some() {
            let (action, _) = same_lists.test_run_repeat(&case.packet, 1000)?;
            ensure!(
                action == case.verdict.action(),
                "groundzero (same lists) gave {action:?}"
            );
        }
        if let Some(expected) = case.xdp_filter {
            let (rc, _) = xdp_filter.test_run(&case.packet, 1000)?;
            ensure!(
                rc == expected,
                "xdp-filter returned {rc} for {:?} {:?}, expected {expected}",
                case.family,
                case.verdict
            );
        }
    }

    // Measurements: (case, program) pairs; program 0 floor, 1 groundzero, 2 xdp-filter,
    // 3 groundzero with xdp-filter's lists, 4 and 5 groundzero with tracing sampled and on
    // every packet, 6 to 8 groundzero capturing nothing, at the default rate, everything.
    let mut jobs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        jobs.push((i, 0));
        jobs.push((i, 1));
        if case.xdp_filter.is_some() {
            jobs.extend([(i, 2), (i, 3), (i, 4), (i, 5), (i, 6), (i, 7), (i, 8)]);
        }
    }
    let (mut traced_runs, mut sampled_runs) = (0u64, 0u64);
    let mut ns = vec![std::array::from_fn::<Vec<f64>, 9, _>(|_| Vec::new()); cases.len()];
    for round in 0..config.rounds {
        for j in order(jobs.len(), round) {
            let (i, program) = jobs[j];
            let packet = &cases[i].packet;
            let d = match program {
                0 => floor.test_run(packet, config.repeat)?.1,
                1 => shield.test_run_repeat(packet, config.repeat)?.1,
                2 => xdp_filter.test_run(packet, config.repeat)?.1,
                3 => same_lists.test_run_repeat(packet, config.repeat)?.1,
                4 => {
                    sampled_runs += u64::from(config.repeat);
                    sampled.test_run_repeat(packet, config.repeat)?.1
                }
                6 => capture_idle.test_run_repeat(packet, config.repeat)?.1,
                7 => capture_rate.test_run_repeat(packet, config.repeat)?.1,
                8 => capture_all.test_run_repeat(packet, config.repeat)?.1,
                _ => {
                    traced_runs += u64::from(config.repeat);
                    traced.test_run_repeat(packet, config.repeat)?.1
                }
            };
            ns[i][program].push(d.as_nanos() as f64);
        }
        crate::progress(&format!("per-packet round {}/{}", round + 1, config.rounds));
    }

    let rows = cases
        .iter()
        .zip(&ns)
        .map(|(case, [f, g, x, same, smp, all, c_idle, c_rate, c_all])| {
            let above = |v: &[f64]| -> Vec<f64> { v.iter().zip(f).map(|(a, b)| a - b).collect() };
            let traced = |v: &[f64]| (!v.is_empty()).then(|| Summary::of(&above(v)));
            let (xf, xf_above, ratio, same_above) = if x.is_empty() {
                (None, None, None, None)
            } else {
                let ratios: Vec<f64> = g
                    .iter()
                    .zip(x)
                    .zip(f)
                    .map(|((g, x), f)| (g - f) / (x - f).max(0.5))
                    .collect();
                (
                    Some(Summary::of(x)),
                    Some(Summary::of(&above(x))),
                    Some(Summary::of(&ratios)),
                    Some(Summary::of(&above(same))),
                )
            };
            Row {
                family: case.family,
                verdict: case.verdict,
                floor: Summary::of(f),
                groundzero: Summary::of(g),
                groundzero_above: Summary::of(&above(g)),
                xdp_filter: xf,
                xdp_filter_above: xf_above,
                ratio,
                same_lists_above: same_above,
                traced_sampled_above: traced(smp),
                traced_all_above: traced(all),
                capture_idle_above: traced(c_idle),
                capture_rate_above: traced(c_rate),
                capture_all_above: traced(c_all),
            }
        })
        .collect();
    let journey_events = drains.into_iter().map(Drain::finish).sum();
    let (capture_records, capture_lost) = capture_drains
        .into_iter()
        .map(CaptureDrain::finish)
        .fold((0, 0), |(r, l), (r2, l2)| (r + r2, l + l2));
    Ok(PerPacket {
        repeat: config.repeat,
        rounds: config.rounds,
        rows,
        frame_len_v4: cases[0].packet.len(),
        frame_len_v6: cases[4].packet.len(),
        journey_events,
        events_expected: traced_runs + sampled_runs / u64::from(SAMPLED_EVERY),
        capture_records,
        capture_lost,
    })
}
