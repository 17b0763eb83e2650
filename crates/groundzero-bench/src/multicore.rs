//! Part 7: both CPUs at once.
//!
//! Two measurements, groundzero side by side with xdp-filter:
//!
//! - **Flood on a two-queue veth.** The target's veth has two receive queues; a sending veth
//!   hands an XDP frame to the queue numbered by the sending CPU, so a generator pinned to CPU
//!   *i* feeds queue *i*. Each queue has its own NAPI kernel thread (threaded NAPI), pinned to
//!   the generator's CPU: with one core, one generator and both NAPI threads share CPU 0; with
//!   two, each CPU runs one generator and one NAPI thread. The generators are hand-assembled
//!   `XDP_TX` programs run in live-frames mode (like part 3's) that set each frame's source:
//!   one blocked source (every packet hits one list entry, whose hit counter is then updated from
//!   both CPUs), 4,096 blocked sources (hits spread over entries) or random sources in a /17 that
//!   is not blocked (the packets pass to the stack). The receiver's cost per packet is its NAPI
//!   threads' CPU time (schedstat) over the frames they took; the generators share the cores, so
//!   wall-clock throughput understates what a core that only receives would do.
//! - **`BPF_PROG_TEST_RUN` on two CPUs.** The same programs run by one thread, then by two
//!   threads pinned to the two CPUs at once, on one shared blocked source or on a different one
//!   per thread: no NAPI, no generator, so a slowdown with two threads on one source is the
//!   shared entry's cache line moving between the cores.

use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use groundzero::{AttachMode, IpNet, Shield, ShieldOptions};
use groundzero_lab::{craft, netns::Netns};

use crate::{
    flood::{mac, napi_in_own_thread, napi_threads, schedstat_ns, SIOCETHTOOL},
    handmade::SourceSpray,
    per_packet::{frame, order},
    progs::{Floor, XdpFilter},
    stats::Summary,
    sys, Config,
};

const TARGET_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The one blocked source of the "shared" flood.
const SHARED_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The blocked sources of the "spread" flood: 198.19.0.0 + 0..SPREAD.
const SPREAD_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
pub const SPREAD: u16 = 4096;
/// Passing sources: 198.18.128.0/17, none blocked.
const PASSING_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const PASSING_LOW: u16 = 0x8000;
const PASSING_MASK: u16 = 0x7fff;
const TARGET_MAC: &str = "02:00:00:00:f7:01";
const OUTSIDE_MAC: &str = "02:00:00:00:f7:02";
const SERVICE_PORT: u16 = 9000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Floor,
    Groundzero,
    /// `--baseline-object`: an older build of the groundzero program.
    Baseline,
    XdpFilter,
}

impl Program {
    pub fn label(self) -> &'static str {
        match self {
            Program::Floor => "floor (return XDP_PASS)",
            Program::Groundzero => "groundzero",
            Program::Baseline => "groundzero, baseline build",
            Program::XdpFilter => "xdp-filter",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sources {
    /// Every packet from one blocked source.
    Shared,
    /// Each packet from one of [`SPREAD`] blocked sources.
    Spread,
    /// Random sources in a /17 that no list holds.
    Passing,
}

impl Sources {
    pub fn label(self) -> &'static str {
        match self {
            Sources::Shared => "one blocked source",
            Sources::Spread => "4,096 blocked sources (2,048 per CPU)",
            Sources::Passing => "random unblocked sources (pass)",
        }
    }
}

/// One flood configuration, over repeats.
#[derive(Clone, Debug)]
pub struct FloodPoint {
    pub program: Program,
    pub sources: Sources,
    pub cores: usize,
    /// Frames the receive queues took per second, all queues.
    pub processed_mpps: Summary,
    /// Frames the XDP program dropped per second, all queues.
    pub dropped_mpps: Summary,
    /// Per queue (= per core): frames dropped per second.
    pub per_core_dropped_mpps: Vec<Summary>,
    /// NAPI threads' CPU ns per frame taken (the receiver's whole cost: XDP, and for passing
    /// frames the stack).
    pub receiver_ns: Summary,
    /// Frames the generators offered per second.
    pub offered_mpps: Summary,
}

/// One `BPF_PROG_TEST_RUN` configuration: mean ns per run over the threads, over rounds.
#[derive(Clone, Debug)]
pub struct TestRunPoint {
    pub program: Program,
    pub shared: bool,
    pub threads: usize,
    pub ns: Summary,
}

#[derive(Clone, Debug)]
pub struct Multicore {
    pub packets_per_core: u64,
    pub repeats: usize,
    pub test_run_repeat: u32,
    pub test_run_rounds: usize,
    pub flood: Vec<FloodPoint>,
    pub test_runs: Vec<TestRunPoint>,
    pub load_before: String,
    pub load_after: String,
    pub skipped: Option<String>,
}

impl Multicore {
    pub fn flood_point(
        &self,
        program: Program,
        sources: Sources,
        cores: usize,
    ) -> Option<&FloodPoint> {
        self.flood
            .iter()
            .find(|p| p.program == program && p.sources == sources && p.cores == cores)
    }

    pub fn test_run_point(
        &self,
        program: Program,
        shared: bool,
        threads: usize,
    ) -> Option<&TestRunPoint> {
        self.test_runs
            .iter()
            .find(|p| p.program == program && p.shared == shared && p.threads == threads)
    }
}

fn blocked() -> Vec<Ipv4Addr> {
    let base = u32::from(SPREAD_BASE);
    std::iter::once(SHARED_SOURCE)
        .chain((0..u32::from(SPREAD)).map(|i| Ipv4Addr::from(base + i)))
        .collect()
}

pub fn run(config: &Config) -> Result<Multicore> {
    let mut out = Multicore {
        packets_per_core: config.multicore_packets,
        repeats: config.multicore_repeats,
        test_run_repeat: config.repeat,
        test_run_rounds: config.multicore_rounds,
        flood: Vec::new(),
        test_runs: Vec::new(),
        load_before: sys::load_average(),
        load_after: String::new(),
        skipped: None,
    };
    if sys::online_cpus() < 2 {
        out.skipped = Some("needs two CPUs".into());
        return Ok(out);
    }
    let blocked = blocked();
    out.test_runs = test_runs(config, &blocked)?;
    out.flood = floods(config, &blocked)?;
    out.load_after = sys::load_average();
    Ok(out)
}

fn groundzero_with(blocked: &[Ipv4Addr], object: Option<&[u8]>) -> Result<Shield> {
    let mut shield = match object {
        Some(o) => Shield::load_object(ShieldOptions::default(), o)?,
        None => Shield::load(ShieldOptions::default())?,
    };
    let nets: Vec<IpNet> = blocked
        .iter()
        .map(|a| IpNet::from(std::net::IpAddr::V4(*a)))
        .collect();
    shield.block_all(&nets)?;
    Ok(shield)
}

fn xdp_filter_with(blocked: &[Ipv4Addr]) -> Result<XdpFilter> {
    let mut xf = XdpFilter::load(Some((blocked.len() as u32).max(10_000)))?;
    for a in blocked {
        xf.block((*a).into())?;
    }
    Ok(xf)
}

fn test_runs(config: &Config, blocked: &[Ipv4Addr]) -> Result<Vec<TestRunPoint>> {
    let floor = Floor::load()?;
    let shield = groundzero_with(blocked, None)?;
    let baseline_bytes = config.baseline_bytes()?;
    let baseline = baseline_bytes
        .as_deref()
        .map(|b| groundzero_with(blocked, Some(b)))
        .transpose()
        .context("loading the baseline object")?;
    let xf = xdp_filter_with(blocked)?;
    let shared = frame(SHARED_SOURCE.into());
    // Two blocked sources whose entries are not the shared one.
    let own = [
        frame(Ipv4Addr::from(u32::from(SPREAD_BASE) + 1).into()),
        frame(Ipv4Addr::from(u32::from(SPREAD_BASE) + 2).into()),
    ];
    let run = |program: Program, packet: &[u8], repeat: u32| -> Result<(u32, Duration)> {
        match program {
            Program::Floor => floor.test_run(packet, repeat),
            Program::Groundzero | Program::Baseline => {
                let shield = match program {
                    Program::Baseline => baseline.as_ref().expect("a baseline job only with one"),
                    _ => &shield,
                };
                let (action, d) = shield.test_run_repeat(packet, repeat)?;
                Ok((action as u32, d))
            }
            Program::XdpFilter => xf.test_run(packet, repeat),
        }
    };
    let mut programs = vec![Program::Floor, Program::Groundzero, Program::XdpFilter];
    if baseline.is_some() {
        programs.insert(2, Program::Baseline);
    }
    // Every program drops every blocked source it is timed on: a faster "drop" that passes
    // would measure nothing.
    for &program in programs.iter().filter(|p| **p != Program::Floor) {
        for packet in [&shared, &own[0], &own[1]] {
            let (rc, _) = run(program, packet, 100)?;
            ensure!(
                rc == crate::per_packet::XDP_DROP,
                "{} passed a blocked source",
                program.label()
            );
        }
    }
    let mut jobs = Vec::new();
    for &program in &programs {
        for shared in [true, false] {
            for threads in [1usize, 2] {
                if threads == 1 && !shared {
                    // One thread on its own source is the shared case already.
                    continue;
                }
                jobs.push((program, shared, threads));
            }
        }
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
    for round in 0..config.multicore_rounds {
        for j in order(jobs.len(), round) {
            let (program, is_shared, threads) = jobs[j];
            let barrier = Barrier::new(threads);
            let results: Vec<Result<Duration>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let packet: &[u8] = if is_shared { &shared } else { &own[t] };
                        let (barrier, run) = (&barrier, &run);
                        scope.spawn(move || -> Result<Duration> {
                            sys::pin_to_cpu(0, t)?;
                            barrier.wait();
                            Ok(run(program, packet, config.repeat)?.1)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("test-run thread panicked"))
                    .collect()
            });
            let mut total = 0.0;
            for r in results {
                total += r?.as_nanos() as f64;
            }
            ns[j].push(total / threads as f64);
        }
    }
    crate::progress("multicore: test runs on two CPUs done");
    Ok(jobs
        .iter()
        .zip(&ns)
        .map(|(&(program, shared, threads), v)| TestRunPoint {
            program,
            shared,
            threads,
            ns: Summary::of(v),
        })
        .collect())
}

/// One flood run's counts.
struct Run {
    processed: Vec<u64>,
    dropped: Vec<u64>,
    napi_ns: u64,
    offered: u64,
    seconds: f64,
}

fn floods(config: &Config, blocked: &[Ipv4Addr]) -> Result<Vec<FloodPoint>> {
    const PROGRAMS: [Program; 2] = [Program::Groundzero, Program::XdpFilter];
    const SOURCES: [Sources; 3] = [Sources::Shared, Sources::Spread, Sources::Passing];
    let mut runs: Vec<Vec<Run>> = Vec::new();
    let mut keys = Vec::new();
    for program in PROGRAMS {
        for sources in SOURCES {
            for cores in [1usize, 2] {
                keys.push((program, sources, cores));
                runs.push(Vec::new());
            }
        }
    }
    for rep in 0..config.multicore_repeats {
        for p in order(PROGRAMS.len(), rep) {
            let program = PROGRAMS[p];
            let lab = Lab::create()?;
            let installed = lab.install(program, blocked)?;
            let napi = lab.napi_by_queue(config)?;
            for k in order(keys.len(), rep) {
                let (kp, sources, cores) = keys[k];
                if kp != program {
                    continue;
                }
                let run = lab
                    .flood(config, &napi, sources, cores, None)
                    .with_context(|| format!("{} flood, {}", program.label(), sources.label()))?;
                let total: u64 = run.processed.iter().sum();
                crate::progress(&format!(
                    "multicore {}/{} {} {} on {cores} core(s): {:.2} Mpps taken ({:?} per queue), \
                     {:.0} ns/frame receiver",
                    rep + 1,
                    config.multicore_repeats,
                    program.label(),
                    sources.label(),
                    total as f64 / run.seconds / 1e6,
                    run.processed,
                    run.napi_ns as f64 / total.max(1) as f64,
                ));
                runs[k].push(run);
            }
            drop(installed);
            drop(lab);
        }
    }
    Ok(keys
        .iter()
        .zip(&runs)
        .map(|(&(program, sources, cores), rs)| {
            let of = |f: &dyn Fn(&Run) -> f64| Summary::of(&rs.iter().map(f).collect::<Vec<_>>());
            FloodPoint {
                program,
                sources,
                cores,
                processed_mpps: of(&|r| r.processed.iter().sum::<u64>() as f64 / r.seconds / 1e6),
                dropped_mpps: of(&|r| r.dropped.iter().sum::<u64>() as f64 / r.seconds / 1e6),
                per_core_dropped_mpps: (0..2)
                    .map(|q| of(&|r| r.dropped[q] as f64 / r.seconds / 1e6))
                    .collect(),
                receiver_ns: of(&|r| {
                    r.napi_ns as f64 / (r.processed.iter().sum::<u64>().max(1)) as f64
                }),
                offered_mpps: of(&|r| r.offered as f64 / r.seconds / 1e6),
            }
        })
        .collect())
}

/// Two namespaces joined by a veth pair with two queues a side.
struct Lab {
    outside: Netns,
    target: Netns,
    o_if: String,
    t_if: String,
    napi_before: Vec<i32>,
}

impl Lab {
    fn create() -> Result<Self> {
        let pid = std::process::id() % 100_000;
        let (o_if, t_if) = (format!("gmo{pid}"), format!("gmt{pid}"));
        let outside = Netns::create("mco")?;
        let target = Netns::create("mct")?;
        groundzero_lab::netns::ip(&[
            "link",
            "add",
            &o_if,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "netns",
            outside.name(),
            "type",
            "veth",
            "peer",
            "name",
            &t_if,
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "netns",
            target.name(),
        ])?;
        for ns in [&outside, &target] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        target.ip(&["link", "set", &t_if, "address", TARGET_MAC])?;
        outside.ip(&["link", "set", &o_if, "address", OUTSIDE_MAC])?;
        target.ip(&["addr", "add", "198.18.1.1/24", "dev", &t_if])?;
        outside.ip(&["addr", "add", "198.18.1.2/24", "dev", &o_if])?;
        outside.ip(&["link", "set", &o_if, "up"])?;
        target.ip(&["link", "set", &t_if, "up"])?;
        let napi_before = napi_in_own_thread(&target, &outside, &t_if, &o_if)?;
        Ok(Self {
            outside,
            target,
            o_if,
            t_if,
            napi_before,
        })
    }

    /// The program attached to the target's veth; detached when the returned value is dropped.
    fn install(&self, program: Program, blocked: &[Ipv4Addr]) -> Result<Box<dyn std::any::Any>> {
        Ok(match program {
            Program::Groundzero => {
                let mut shield = groundzero_with(blocked, None)?;
                self.target
                    .try_run(|| shield.attach(&self.t_if, AttachMode::Native))??;
                Box::new(shield)
            }
            Program::XdpFilter => {
                let mut xf = xdp_filter_with(blocked)?;
                self.target.try_run(|| xf.attach_native(&self.t_if))??;
                Box::new(xf)
            }
            Program::Floor | Program::Baseline => bail!("{} is not flooded", program.label()),
        })
    }

    /// The NAPI threads of the target's two queues (those that appeared since `create`).
    fn napi_threads(&self) -> Result<Vec<i32>> {
        let mut new: Vec<i32> = napi_threads(&self.t_if)?
            .into_iter()
            .filter(|pid| !self.napi_before.contains(pid))
            .collect();
        new.sort_unstable();
        ensure!(
            new.len() == 2,
            "expected two NAPI threads for {} (threaded NAPI, two queues), found {new:?}",
            self.t_if
        );
        Ok(new)
    }

    /// The two NAPI threads ordered by the queue they serve: a short flood from CPU 0 (which
    /// feeds queue 0) with the threads on different CPUs shows which one does the work. Queue
    /// *i*'s thread must run on CPU *i*, with its generator: the frames' pages go back to the
    /// generator's page pool, and from another CPU that costs more.
    fn napi_by_queue(&self, config: &Config) -> Result<Vec<i32>> {
        let mut napi = self.napi_threads()?;
        let before: Vec<u64> = napi
            .iter()
            .map(|&t| schedstat_ns(t))
            .collect::<Result<_>>()?;
        let small = Config {
            multicore_packets: 20_000,
            ..config.clone()
        };
        let run = self.flood(&small, &napi, Sources::Shared, 2, Some(1))?;
        let after: Vec<u64> = napi
            .iter()
            .map(|&t| schedstat_ns(t))
            .collect::<Result<_>>()?;
        ensure!(
            run.processed[0] > 0 && run.processed[1] == 0,
            "a flood from CPU 0 reached queues {:?}, not queue 0 alone",
            run.processed
        );
        if after[1] - before[1] > after[0] - before[0] {
            napi.swap(0, 1);
        }
        Ok(napi)
    }

    /// A flood from `cores` generators (CPU 0, then CPU 1), or only from `only` generators.
    fn flood(
        &self,
        config: &Config,
        napi: &[i32],
        sources: Sources,
        cores: usize,
        only: Option<usize>,
    ) -> Result<Run> {
        // One core: both NAPI threads on CPU 0 (whichever queue gets the frames); two: one each.
        for (i, &tid) in napi.iter().enumerate() {
            sys::pin_to_cpu(tid, if cores == 1 { 0 } else { i })?;
        }
        // Real-time NAPI threads: a woken NAPI thread preempts the generator on its core at
        // once (rather than when the scheduler gets round to it, while the 256-frame ring
        // overflows), and other work on the machine does not delay the receiving.
        for &tid in napi {
            realtime(tid)?;
        }
        let mut base = craft::ip_packet(
            match sources {
                Sources::Shared => SHARED_SOURCE,
                Sources::Spread => SPREAD_BASE,
                Sources::Passing => PASSING_BASE,
            }
            .into(),
            TARGET_ADDR.into(),
            craft::L4::Udp {
                src_port: 40000,
                dst_port: SERVICE_PORT,
            },
            &[0x5au8; 18],
        );
        base[..6].copy_from_slice(&mac(TARGET_MAC));
        base[6..12].copy_from_slice(&mac(OUTSIDE_MAC));
        // Spread: each generator (CPU) sends from its own half of the blocked range, as a NIC's
        // receive-side scaling would (it hashes the source to pick the queue): each entry is
        // then written by one CPU only.
        let generators = only.unwrap_or(cores);
        let sprays: Vec<SourceSpray> = (0..generators)
            .map(|g| {
                let (low, mask) = match sources {
                    Sources::Shared => (u16::from_be_bytes([1, 2]), 0),
                    Sources::Spread => (g as u16 * (SPREAD / 2), SPREAD / 2 - 1),
                    Sources::Passing => (PASSING_LOW, PASSING_MASK),
                };
                SourceSpray::new(&mut base, low, mask)
            })
            .collect::<Result<_>>()?;
        let before = self.queue_stats()?;
        let napi_before: u64 = napi.iter().map(|&t| schedstat_ns(t)).sum::<Result<u64>>()?;
        let barrier = Arc::new(Barrier::new(generators));
        let start = Instant::now();
        let sent: Vec<Result<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..generators)
                .map(|cpu| {
                    let (barrier, spray, frame, outside, o_if) = (
                        barrier.clone(),
                        &sprays[cpu],
                        &base,
                        &self.outside,
                        &self.o_if,
                    );
                    scope.spawn(move || -> Result<u64> {
                        outside.try_run(|| -> Result<u64> {
                            sys::pin_to_cpu(0, cpu)?;
                            let ifindex = nix::net::if_::if_nametoindex(o_if.as_str())
                                .with_context(|| format!("ifindex of {o_if}"))?;
                            barrier.wait();
                            let t = Instant::now();
                            let mut sent = 0u64;
                            while sent < config.multicore_packets
                                && t.elapsed() < Duration::from_secs(20)
                            {
                                let n = (config.multicore_packets - sent).min(250_000);
                                spray.prog.transmit_live(frame, ifindex, n as u32)?;
                                sent += n;
                            }
                            Ok(sent)
                        })?
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("generator panicked"))
                .collect()
        });
        let seconds = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(50));
        let after = self.queue_stats()?;
        let napi_after: u64 = napi.iter().map(|&t| schedstat_ns(t)).sum::<Result<u64>>()?;
        let mut offered = 0;
        for s in sent {
            offered += s?;
        }
        Ok(Run {
            processed: (0..2).map(|q| after[q].0 - before[q].0).collect(),
            dropped: (0..2).map(|q| after[q].1 - before[q].1).collect(),
            napi_ns: napi_after - napi_before,
            offered,
            seconds,
        })
    }

    /// (xdp_packets, xdp_drops) of each of the target's receive queues.
    fn queue_stats(&self) -> Result<Vec<(u64, u64)>> {
        let stats = self.target.try_run(|| ethtool_stats(&self.t_if))??;
        (0..2)
            .map(|q| {
                let get = |name: &str| {
                    let key = format!("rx_queue_{q}_{name}");
                    stats
                        .iter()
                        .find(|(n, _)| *n == key)
                        .map(|(_, v)| *v)
                        .with_context(|| format!("no {key} in the veth's statistics"))
                };
                Ok((get("xdp_packets")?, get("xdp_drops")?))
            })
            .collect()
    }
}

const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// `ethtool -S IFACE` without ethtool: the driver's statistics by name (in the calling
/// thread's namespace).
fn ethtool_stats(iface: &str) -> Result<Vec<(String, u64)>> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let ioctl = |data: &mut [u8]| -> Result<()> {
        #[repr(C)]
        struct Ifreq {
            name: [u8; libc::IFNAMSIZ],
            data: *mut u8,
            _pad: [u8; 16],
        }
        let mut req = Ifreq {
            name: [0; libc::IFNAMSIZ],
            data: data.as_mut_ptr(),
            _pad: [0; 16],
        };
        ensure!(iface.len() < libc::IFNAMSIZ, "interface name too long");
        req.name[..iface.len()].copy_from_slice(iface.as_bytes());
        // SAFETY: `req` is a valid ifreq whose data points at a buffer the size the command
        // needs (the callers size it from the count the kernel reported).
        let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req) };
        if ret != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("ethtool statistics of {iface}"));
        }
        Ok(())
    };
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; }
    let mut info = vec![0u8; 20];
    info[..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_STATS).to_ne_bytes());
    ioctl(&mut info)?;
    let n = u32::from_ne_bytes(info[16..20].try_into().expect("4 bytes")) as usize;
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[]; }
    let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
    strings[..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
    strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
    ioctl(&mut strings)?;
    // struct ethtool_stats { u32 cmd; u32 n_stats; u64 data[]; }
    let mut values = vec![0u8; 8 + n * 8];
    values[..4].copy_from_slice(&ETHTOOL_GSTATS.to_ne_bytes());
    values[4..8].copy_from_slice(&(n as u32).to_ne_bytes());
    ioctl(&mut values)?;
    Ok((0..n)
        .map(|i| {
            let raw = &strings[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let name = String::from_utf8_lossy(&raw[..end]).into_owned();
            let v = u64::from_ne_bytes(values[8 + i * 8..16 + i * 8].try_into().expect("8"));
            (name, v)
        })
        .collect())
}

/// `SCHED_FIFO` at a low real-time priority for thread `tid`.
fn realtime(tid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param`, which outlives the call.
    let ret = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("making NAPI thread {tid} SCHED_FIFO"));
    }
    Ok(())
}
