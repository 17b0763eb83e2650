//! Part 3: flood defence on veth between two network namespaces.
//!
//! Two namespaces joined by a veth pair: `outside` (an attacker at 198.18.1.2 and a legitimate
//! client at 198.18.1.3) and `target` (a UDP echo service at 198.18.1.1:9000). CPU 0 runs
//! everything outside (flood generator, client, this program's main thread); CPU 1 is the
//! protected host: the target veth's receive path runs in its own NAPI kernel thread (GRO on,
//! threaded NAPI) pinned to CPU 1, and so does the echo service. Whatever defence is under test
//! (XDP, nftables ingress, iptables raw, the service itself) does its work in one of those two
//! threads, so their CPU time (`/proc/<tid>/schedstat`, nanoseconds) is the protected host's
//! cost, measured precisely and apart from the sender's.
//!
//! The flood is generated like xdp-trafficgen does it: an `XDP_TX` program run with
//! `BPF_PROG_TEST_RUN` in live-frames mode transmits frames out of the outside veth, so they
//! reach the target's NAPI as XDP frames, the way a NIC driver hands packets over: no skb
//! exists until the target's stack builds one for a frame that its XDP program (if any) passed.
//! The generator is not paced (it offers several million frames a second, more than any
//! defence here processes): every defence runs at its limit, so its CPU time per packet is also
//! its drop capacity, and what it cannot take overflows the veth ring.

use std::{
    any::Any,
    collections::HashSet,
    io::Write,
    net::{IpAddr, Ipv4Addr, UdpSocket},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use groundzero::{AttachMode, IpNet, Shield, ShieldOptions};
use groundzero_lab::{
    craft,
    netns::{veth, Netns},
};

use crate::{
    progs::{RawXdp, XdpFilter},
    scale::Rng,
    stats::{quantile, Summary},
    sys, Config,
};

const TARGET_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub(crate) const ATTACKER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const LEGIT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const SERVICE_PORT: u16 = 9000;
const TARGET_MAC: &str = "02:00:00:00:f1:01";
const OUTSIDE_MAC: &str = "02:00:00:00:f1:02";
/// Flood payload: 18 bytes, so each frame is 60 bytes (the Ethernet minimum without FCS).
const FLOOD_PAYLOAD: usize = 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defence {
    GroundzeroNative,
    GroundzeroGeneric,
    XdpFilterNative,
    NftIngress,
    IptablesRaw,
    UserSpace,
    /// Part 4, journey tracing's whole-path cost: groundzero native with the attacker *not*
    /// listed, so every flood packet goes up the stack to the service's socket, with tracing
    /// off, sampling 1 in [`crate::per_packet::SAMPLED_EVERY`], and on every packet.
    TraceOff,
    TraceSampled,
    TraceEvery,
    /// Part 5: groundzero's daemon holding the CrowdSec decisions it pulled (XDP, native).
    CrowdsecGroundzero,
    /// Part 5: crowdsec-firewall-bouncer's own nftables table and set, as it filled them.
    CrowdsecFirewall,
}

/// Installs a defence that runs as a process of its own (part 5's bouncers) in the target
/// namespace on its interface; the returned value holds it until the run is over.
pub(crate) type Installer<'a> = dyn Fn(Defence, &Netns, &str) -> Result<Box<dyn Any>> + 'a;

impl Defence {
    pub const TRACING: [Defence; 3] = [
        Defence::TraceOff,
        Defence::TraceSampled,
        Defence::TraceEvery,
    ];

    pub const CROWDSEC: [Defence; 2] = [Defence::CrowdsecGroundzero, Defence::CrowdsecFirewall];

    pub const ALL: [Defence; 6] = [
        Defence::GroundzeroNative,
        Defence::GroundzeroGeneric,
        Defence::XdpFilterNative,
        Defence::NftIngress,
        Defence::IptablesRaw,
        Defence::UserSpace,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Defence::GroundzeroNative => "groundzero XDP (native)",
            Defence::GroundzeroGeneric => "groundzero XDP (generic)",
            Defence::XdpFilterNative => "xdp-filter XDP (native)",
            Defence::NftIngress => "nftables netdev ingress + set",
            Defence::IptablesRaw => "iptables raw PREROUTING + ipset",
            Defence::UserSpace => "user-space drop (in the service)",
            Defence::TraceOff => "tracing off",
            Defence::TraceSampled => "tracing 1 in 64",
            Defence::TraceEvery => "tracing every packet",
            Defence::CrowdsecGroundzero => "groundzero daemon, CrowdSec decisions (XDP native)",
            Defence::CrowdsecFirewall => "crowdsec-firewall-bouncer's table (nftables input + set)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Defence::GroundzeroNative => "gz native",
            Defence::GroundzeroGeneric => "gz generic",
            Defence::XdpFilterNative => "xdp-filter",
            Defence::NftIngress => "nft ingress",
            Defence::IptablesRaw => "iptables raw",
            Defence::UserSpace => "user space",
            Defence::TraceOff => "trace off",
            Defence::TraceSampled => "trace 1/64",
            Defence::TraceEvery => "trace all",
            Defence::CrowdsecGroundzero => "cs groundzero",
            Defence::CrowdsecFirewall => "cs fw-bouncer",
        }
    }
}

/// One defence, every repeat.
#[derive(Clone, Debug)]
pub struct FloodResult {
    pub defence: Defence,
    /// Protected host's CPU ns per flood packet it processed (NAPI thread + service thread,
    /// above the quiet baseline).
    pub cpu_ns_per_packet: Summary,
    /// The same from CPU 1's busy time in /proc/stat (coarser; includes anything else on CPU 1).
    pub cpu1_ns_per_packet: Summary,
    /// Of the processed flood packets, percent dropped by the defence itself.
    pub dropped_by_defence_pct: Summary,
    /// Of the processed flood packets, percent that reached the service's socket (user-space
    /// drop: everything it dropped) or overflowed its buffer.
    pub reached_service_pct: Summary,
    /// Of the offered flood packets, percent the protected host never took (veth ring full).
    pub overflow_pct: Summary,
    /// Legitimate requests answered during the flood, percent.
    pub legit_success_pct: Summary,
    pub legit_p50_us: Summary,
    pub legit_p99_us: Summary,
    /// Without a flood, as a reference.
    pub quiet_success_pct: Summary,
    pub quiet_p50_us: Summary,
    pub quiet_p99_us: Summary,
    pub offered_mpps: Summary,
}

#[derive(Clone, Debug)]
pub struct Flood {
    pub packets: u64,
    pub chunk: u32,
    pub filler: usize,
    pub repeats: usize,
    pub legit_interval_us: u64,
    pub legit_timeout_ms: u64,
    pub results: Vec<FloodResult>,
    /// Part 4: [`Defence::TRACING`], every repeat (empty unless part 4 ran).
    pub trace_results: Vec<FloodResult>,
    /// Why the part did not run (too few CPUs), if it did not.
    pub skipped: Option<String>,
}

/// One run of one defence.
struct Sample {
    cpu_ns_per_packet: f64,
    cpu1_ns_per_packet: f64,
    processed_mpps: f64,
    dropped_by_defence_pct: f64,
    reached_pct: f64,
    overflow_pct: f64,
    legit_success_pct: f64,
    legit_p50_us: f64,
    legit_p99_us: f64,
    quiet_success_pct: f64,
    quiet_p50_us: f64,
    quiet_p99_us: f64,
    offered_mpps: f64,
}

pub fn run(config: &Config) -> Result<Flood> {
    let mut out = Flood {
        packets: config.flood_packets,
        chunk: config.flood_chunk,
        filler: config.flood_filler,
        repeats: config.flood_repeats,
        legit_interval_us: 1000,
        legit_timeout_ms: 50,
        results: Vec::new(),
        trace_results: Vec::new(),
        skipped: None,
    };
    if sys::online_cpus() < 2 {
        out.skipped =
            Some("needs two CPUs (one for the outside, one for the protected host)".into());
        return Ok(out);
    }
    sys::pin_to_cpu(0, 0)?;
    let mut rng = Rng::new(0x0066_6c6f_6f64);
    let mut blocked: Vec<Ipv4Addr> = Vec::with_capacity(config.flood_filler + 1);
    let mut seen = HashSet::new();
    blocked.push(ATTACKER_ADDR);
    seen.insert(ATTACKER_ADDR);
    while blocked.len() < config.flood_filler + 1 {
        let a = Ipv4Addr::from(0xf000_0000 | (rng.next() as u32 & 0x0eff_ffff));
        if seen.insert(a) {
            blocked.push(a);
        }
    }
    if config.parts.contains(&3) {
        out.results = measure(config, &out, &Defence::ALL, &blocked, None)?;
    }
    if config.parts.contains(&4) {
        out.trace_results = measure(config, &out, &Defence::TRACING, &blocked, None)?;
    }
    Ok(out)
}

/// The flood of this part with defences that `installer` sets up (part 5), `repeats` times:
/// `blocked` must hold [`ATTACKER_ADDR`]. Empty when the machine has fewer than two CPUs.
pub(crate) fn run_custom(
    config: &Config,
    defences: &[Defence],
    blocked: &[Ipv4Addr],
    repeats: usize,
    installer: &Installer,
) -> Result<Vec<FloodResult>> {
    if sys::online_cpus() < 2 {
        return Ok(Vec::new());
    }
    ensure!(
        blocked.contains(&ATTACKER_ADDR),
        "the flood's source must be in the blocked set"
    );
    let config = Config {
        flood_repeats: repeats,
        ..config.clone()
    };
    let out = Flood {
        packets: config.flood_packets,
        chunk: config.flood_chunk,
        filler: blocked.len() - 1,
        repeats,
        legit_interval_us: 1000,
        legit_timeout_ms: 50,
        results: Vec::new(),
        trace_results: Vec::new(),
        skipped: None,
    };
    sys::pin_to_cpu(0, 0)?;
    let results = measure(&config, &out, defences, blocked, Some(installer));
    sys::unpin()?;
    results
}

/// Every defence of `defences`, `flood_repeats` times, in an order rotated each repeat.
fn measure(
    config: &Config,
    out: &Flood,
    defences: &[Defence],
    blocked: &[Ipv4Addr],
    installer: Option<&Installer>,
) -> Result<Vec<FloodResult>> {
    let mut results = Vec::new();
    let mut samples: Vec<Vec<Sample>> = defences.iter().map(|_| Vec::new()).collect();
    for rep in 0..config.flood_repeats {
        for k in crate::per_packet::order(defences.len(), rep) {
            let defence = defences[k];
            let sample = run_one(config, out, defence, blocked, installer)
                .with_context(|| format!("flood with {}", defence.label()))?;
            crate::progress(&format!(
                "flood {}/{} {}: {:.0} ns/pkt, {:.2} Mpps processed, {:.1}% dropped by defence, \
                 {:.1}% overflow, legit {:.1}% p50 {:.0} µs p99 {:.0} µs",
                rep + 1,
                config.flood_repeats,
                defence.short(),
                sample.cpu_ns_per_packet,
                sample.processed_mpps,
                sample.dropped_by_defence_pct,
                sample.overflow_pct,
                sample.legit_success_pct,
                sample.legit_p50_us,
                sample.legit_p99_us
            ));
            samples[k].push(sample);
        }
    }
    for (defence, s) in defences.iter().zip(&samples) {
        let of = |f: fn(&Sample) -> f64| Summary::of(&s.iter().map(f).collect::<Vec<_>>());
        results.push(FloodResult {
            defence: *defence,
            cpu_ns_per_packet: of(|s| s.cpu_ns_per_packet),
            cpu1_ns_per_packet: of(|s| s.cpu1_ns_per_packet),
            dropped_by_defence_pct: of(|s| s.dropped_by_defence_pct),
            reached_service_pct: of(|s| s.reached_pct),
            overflow_pct: of(|s| s.overflow_pct),
            legit_success_pct: of(|s| s.legit_success_pct),
            legit_p50_us: of(|s| s.legit_p50_us),
            legit_p99_us: of(|s| s.legit_p99_us),
            quiet_success_pct: of(|s| s.quiet_success_pct),
            quiet_p50_us: of(|s| s.quiet_p50_us),
            quiet_p99_us: of(|s| s.quiet_p99_us),
            offered_mpps: of(|s| s.offered_mpps),
        });
    }
    Ok(results)
}

/// What is holding a defence in place; dropped (detached) before the namespaces go.
enum Installed {
    Shield(Box<Shield>),
    /// A tracing shield and the thread draining its journey events.
    Traced(Box<Shield>, crate::per_packet::Drain),
    XdpFilter(Box<XdpFilter>),
    /// A process of its own ([`Installer`]).
    Process(Box<dyn Any>),
    Kernel,
    None,
}

fn run_one(
    config: &Config,
    flood: &Flood,
    defence: Defence,
    blocked: &[Ipv4Addr],
    installer: Option<&Installer>,
) -> Result<Sample> {
    let pid = std::process::id() % 100_000;
    let (o_if, t_if) = (format!("gzo{pid}"), format!("gzt{pid}"));
    let outside = Netns::create("flo")?;
    let target = Netns::create("flt")?;
    veth(&outside, &o_if, &target, &t_if)?;
    for ns in [&outside, &target] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    }
    target.ip(&["link", "set", &t_if, "address", TARGET_MAC])?;
    outside.ip(&["link", "set", &o_if, "address", OUTSIDE_MAC])?;
    target.ip(&["addr", "add", "198.18.1.1/24", "dev", &t_if])?;
    outside.ip(&["addr", "add", "198.18.1.2/24", "dev", &o_if])?;
    outside.ip(&["addr", "add", "198.18.1.3/24", "dev", &o_if])?;
    // Static neighbours: no ARP in either direction.
    for a in ["198.18.1.2", "198.18.1.3"] {
        let args = [
            "neigh",
            "add",
            a,
            "lladdr",
            OUTSIDE_MAC,
            "dev",
            &t_if,
            "nud",
            "permanent",
        ];
        target.ip(&args)?;
    }
    let args = [
        "neigh",
        "add",
        "198.18.1.1",
        "lladdr",
        TARGET_MAC,
        "dev",
        &o_if,
        "nud",
        "permanent",
    ];
    outside.ip(&args)?;
    // The receive path through NAPI for every defence, in a thread we pin to CPU 1.
    let napi_before = napi_in_own_thread(&target, &outside, &t_if, &o_if)?;

    let installed = match installer {
        Some(installer) => Installed::Process(installer(defence, &target, &t_if)?),
        None => install(defence, &target, &t_if, blocked)?,
    };
    let napi = new_napi_thread(&t_if, &napi_before)?;
    sys::pin_to_cpu(napi, 1)?;

    let blocked_set: Arc<HashSet<IpAddr>> =
        Arc::new(blocked.iter().map(|a| IpAddr::V4(*a)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let attack_received = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let result = std::thread::scope(|scope| -> Result<Sample> {
        // However this closure ends (an error included), the service and the client stop, so
        // the scope's join cannot hang.
        let _stop_on_exit = StopOnDrop(&stop);
        // The service: answers legitimate requests, discards blocked sources.
        let (tid_tx, tid_rx) = mpsc::channel();
        let service = {
            let (stop, attack_received, blocked_set) =
                (stop.clone(), attack_received.clone(), blocked_set.clone());
            let target = &target;
            scope.spawn(move || -> Result<()> {
                target.try_run(|| -> Result<()> {
                    sys::pin_to_cpu(0, 1)?;
                    // SAFETY: gettid has no preconditions.
                    tid_tx.send(unsafe { libc::gettid() }).ok();
                    let socket = UdpSocket::bind((TARGET_ADDR, SERVICE_PORT))?;
                    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv_from(&mut buf) {
                            Ok((n, from)) => {
                                if blocked_set.contains(&from.ip()) {
                                    attack_received.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    let _ = socket.send_to(&buf[..n], from);
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(())
                })?
            })
        };
        let service_tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .context("service thread did not start")?;

        // The legitimate client: one request per interval, each waits for its answer.
        let client = {
            let stop = stop.clone();
            let outside = &outside;
            let (interval, timeout) = (
                Duration::from_micros(flood.legit_interval_us),
                Duration::from_millis(flood.legit_timeout_ms),
            );
            scope.spawn(move || -> Result<Vec<(Duration, Option<Duration>)>> {
                outside.try_run(|| -> Result<Vec<(Duration, Option<Duration>)>> {
                    sys::pin_to_cpu(0, 0)?;
                    let socket = UdpSocket::bind((LEGIT_ADDR, 0))?;
                    socket.connect((TARGET_ADDR, SERVICE_PORT))?;
                    let mut log = Vec::new();
                    let mut buf = [0u8; 64];
                    let mut seq: u64 = 0;
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let sent_at = Instant::now();
                        socket.send(&seq.to_le_bytes())?;
                        let mut rtt = None;
                        loop {
                            let left = timeout.saturating_sub(sent_at.elapsed());
                            if left.is_zero() {
                                break;
                            }
                            socket.set_read_timeout(Some(left))?;
                            match socket.recv(&mut buf) {
                                Ok(8) if buf[..8] == seq.to_le_bytes() => {
                                    rtt = Some(sent_at.elapsed());
                                    break;
                                }
                                Ok(_) => continue, // a late answer to an earlier request
                                Err(_) => break,
                            }
                        }
                        log.push((sent_at - epoch, rtt));
                        next += interval;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                    Ok(log)
                })?
            })
        };

        let read = || -> Result<CpuReading> {
            Ok(CpuReading {
                at: Instant::now(),
                napi_ns: schedstat_ns(napi)?,
                service_ns: schedstat_ns(service_tid)?,
                cpu1_idle_ticks: cpu_idle_ticks(1)?,
            })
        };
        std::thread::sleep(Duration::from_millis(if config.smoke { 50 } else { 300 }));
        // Quiet window: legitimate traffic only.
        let q0 = read()?;
        std::thread::sleep(Duration::from_secs_f64(config.quiet_seconds));
        let q1 = read()?;
        let quiet_window = (q0.at - epoch, q1.at - epoch);

        let counters_before = snapshot_drops(&target, &t_if)?;
        let received_before = attack_received.load(Ordering::Relaxed);
        let f0 = read()?;
        let flooder = {
            let outside = &outside;
            let (packets, chunk) = (config.flood_packets, config.flood_chunk);
            let o_if = o_if.as_str();
            scope.spawn(move || -> Result<(u64, Duration)> {
                outside.try_run(|| flood_frames(o_if, packets, chunk))?
            })
        };
        let (sent, flood_time) = flooder.join().expect("flooder panicked")?;
        let flood_end = Instant::now();
        // Let the ring and the socket drain.
        std::thread::sleep(Duration::from_millis(100));
        let f1 = read()?;
        let flood_window = (f0.at - epoch, flood_end - epoch);
        let counters_after = snapshot_drops(&target, &t_if)?;
        let reached = attack_received.load(Ordering::Relaxed) - received_before;

        stop.store(true, Ordering::Relaxed);
        let log = client.join().expect("client panicked")?;
        service.join().expect("service panicked")?;

        let in_window = |w: (Duration, Duration)| {
            log.iter()
                .filter(|(t, _)| *t >= w.0 && *t < w.1)
                .map(|(_, r)| *r)
                .collect::<Vec<Option<Duration>>>()
        };
        let flood_requests = in_window(flood_window);
        let quiet_requests = in_window(quiet_window);

        // CPU: the flood window minus what the quiet window's rate would have used.
        let quiet_s = (q1.at - q0.at).as_secs_f64();
        let flood_s = (f1.at - f0.at).as_secs_f64();
        let task_quiet = ((q1.napi_ns + q1.service_ns) - (q0.napi_ns + q0.service_ns)) as f64;
        let task_flood = ((f1.napi_ns + f1.service_ns) - (f0.napi_ns + f0.service_ns)) as f64;
        let task_extra = task_flood - task_quiet / quiet_s * flood_s;
        let busy = |a: &CpuReading, b: &CpuReading| {
            let wall = (b.at - a.at).as_secs_f64() * 1e9;
            wall - (b.cpu1_idle_ticks - a.cpu1_idle_ticks) as f64 * 1e9 / ticks_per_second()
        };
        let cpu1_extra = busy(&f0, &f1) - busy(&q0, &q1) / quiet_s * flood_s;

        let d = counters_after.since(&counters_before);
        let sent_f = sent as f64;
        // Frames the target's NAPI took off the ring, less the legitimate requests among them.
        let processed = (d.target_rx_packets as f64 - flood_requests.len() as f64).max(1.0);
        let reached_f = (reached + d.rcvbuf) as f64;
        let dropped_by_defence = match defence {
            Defence::UserSpace => reached as f64,
            _ => (processed - reached_f).max(0.0),
        };
        let flood_secs = flood_time.as_secs_f64();
        let (success, flood_rtts) = rtts(&flood_requests);
        let (quiet_success, quiet_rtts) = rtts(&quiet_requests);
        let pick = |v: &[f64], q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                quantile(v, q)
            }
        };
        Ok(Sample {
            cpu_ns_per_packet: task_extra / processed,
            cpu1_ns_per_packet: cpu1_extra / processed,
            processed_mpps: processed / flood_secs / 1e6,
            dropped_by_defence_pct: 100.0 * dropped_by_defence / processed,
            reached_pct: 100.0 * reached_f / processed,
            overflow_pct: 100.0 * (sent_f - processed).max(0.0) / sent_f,
            legit_success_pct: success,
            legit_p50_us: pick(&flood_rtts, 0.5),
            legit_p99_us: pick(&flood_rtts, 0.99),
            quiet_success_pct: quiet_success,
            quiet_p50_us: pick(&quiet_rtts, 0.5),
            quiet_p99_us: pick(&quiet_rtts, 0.99),
            offered_mpps: sent_f / flood_secs / 1e6,
        })
    });
    // Detach before the namespaces go.
    match installed {
        Installed::Shield(s) => drop(s),
        Installed::Traced(s, drain) => {
            drain.finish();
            drop(s)
        }
        Installed::XdpFilter(x) => drop(x),
        Installed::Process(p) => drop(p),
        Installed::Kernel | Installed::None => {}
    }
    drop(target);
    drop(outside);
    result
}

/// Success rate (percent) and sorted round-trip times (µs) of a set of requests.
fn rtts(requests: &[Option<Duration>]) -> (f64, Vec<f64>) {
    let mut ok: Vec<f64> = requests
        .iter()
        .filter_map(|r| r.map(|d| d.as_secs_f64() * 1e6))
        .collect();
    ok.sort_by(|a, b| a.total_cmp(b));
    let success = if requests.is_empty() {
        f64::NAN
    } else {
        100.0 * ok.len() as f64 / requests.len() as f64
    };
    (success, ok)
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct CpuReading {
    at: Instant,
    napi_ns: u64,
    service_ns: u64,
    cpu1_idle_ticks: u64,
}

fn install(
    defence: Defence,
    target: &Netns,
    t_if: &str,
    blocked: &[Ipv4Addr],
) -> Result<Installed> {
    let nets: Vec<IpNet> = blocked
        .iter()
        .map(|a| IpNet::from(IpAddr::V4(*a)))
        .collect();
    Ok(match defence {
        Defence::GroundzeroNative | Defence::GroundzeroGeneric => {
            let mut shield = Shield::load(ShieldOptions::default())?;
            shield.block_all(&nets)?;
            let mode = if defence == Defence::GroundzeroNative {
                AttachMode::Native
            } else {
                AttachMode::Generic
            };
            target.try_run(|| shield.attach(t_if, mode))??;
            Installed::Shield(Box::new(shield))
        }
        Defence::TraceOff | Defence::TraceSampled | Defence::TraceEvery => {
            // The same lists without the attacker: its flood passes and is read by the service.
            let passing: Vec<IpNet> = nets
                .iter()
                .filter(|n| n.addr() != IpAddr::V4(ATTACKER_ADDR))
                .copied()
                .collect();
            let mut shield = Shield::load(ShieldOptions::default())?;
            shield.block_all(&passing)?;
            target.try_run(|| shield.attach(t_if, AttachMode::Native))??;
            let every = match defence {
                Defence::TraceOff => None,
                Defence::TraceSampled => Some(crate::per_packet::SAMPLED_EVERY),
                _ => Some(1),
            };
            match every {
                None => Installed::Shield(Box::new(shield)),
                Some(n) => {
                    let kernel = groundzero::journey::KernelInfo::from_running_kernel()
                        .context("reading the kernel's BTF for journey tracing")?;
                    let any =
                        groundzero::journey::parse_filter("any").map_err(anyhow::Error::msg)?;
                    shield.start_journey(&kernel, n, any)?;
                    let drain = crate::per_packet::Drain::start(&mut shield)?;
                    Installed::Traced(Box::new(shield), drain)
                }
            }
        }
        Defence::XdpFilterNative => {
            let mut xf = XdpFilter::load(Some((blocked.len() as u32).max(10_000)))?;
            for a in blocked {
                xf.block(IpAddr::V4(*a))?;
            }
            target.try_run(|| xf.attach_native(t_if))??;
            Installed::XdpFilter(Box::new(xf))
        }
        Defence::NftIngress => {
            let mut rules = String::from(
                "table netdev gzbench {\n  set blocked {\n    type ipv4_addr\n    elements = { ",
            );
            for (i, a) in blocked.iter().enumerate() {
                if i > 0 {
                    rules.push_str(", ");
                }
                rules.push_str(&a.to_string());
            }
            rules.push_str(&format!(
                " }}\n  }}\n  chain ingress {{\n    type filter hook ingress device \"{t_if}\" priority -500; policy accept;\n    ip saddr @blocked counter drop\n  }}\n}}\n"
            ));
            netns_exec(target.name(), &["nft", "-f", "-"], Some(rules.as_bytes()))?;
            Installed::Kernel
        }
        Defence::IptablesRaw => {
            let mut restore = format!(
                "create gzbench hash:ip maxelem {}\n",
                blocked.len().max(65536)
            );
            for a in blocked {
                restore.push_str(&format!("add gzbench {a}\n"));
            }
            netns_exec(
                target.name(),
                &["ipset", "restore"],
                Some(restore.as_bytes()),
            )?;
            netns_exec(
                target.name(),
                &[
                    "iptables",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-m",
                    "set",
                    "--match-set",
                    "gzbench",
                    "src",
                    "-j",
                    "DROP",
                ],
                None,
            )?;
            Installed::Kernel
        }
        Defence::UserSpace => Installed::None,
        Defence::CrowdsecGroundzero | Defence::CrowdsecFirewall => {
            bail!(
                "{} runs as a process: install it with an Installer",
                defence.label()
            )
        }
    })
}

/// Runs a command inside a namespace (`ip netns exec`), optionally feeding it `stdin`.
pub(crate) fn netns_exec(ns: &str, command: &[&str], stdin: Option<&[u8]>) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", command.join(" ")))?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` in {ns} failed: {}",
            command.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sends `packets` 60-byte UDP frames from the attacker to the service, `chunk` per call,
/// unpaced (as fast as the generator goes), stopping after 30 s whatever the count. Like
/// xdp-trafficgen: an `XDP_TX` program run in live-frames mode transmits the frame out of the
/// outside veth. Must run in the outside namespace.
fn flood_frames(o_if: &str, packets: u64, chunk: u32) -> Result<(u64, Duration)> {
    sys::pin_to_cpu(0, 0)?;
    let ifindex =
        nix::net::if_::if_nametoindex(o_if).with_context(|| format!("ifindex of {o_if}"))?;
    let tx = RawXdp::returning(3)?; // XDP_TX
    let mut frame = craft::ip_packet(
        ATTACKER_ADDR.into(),
        TARGET_ADDR.into(),
        craft::L4::Udp {
            src_port: 40000,
            dst_port: SERVICE_PORT,
        },
        &[0x5au8; FLOOD_PAYLOAD],
    );
    frame[..6].copy_from_slice(&mac(TARGET_MAC));
    frame[6..12].copy_from_slice(&mac(OUTSIDE_MAC));
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < packets && start.elapsed() < Duration::from_secs(30) {
        let n = (packets - sent).min(u64::from(chunk));
        tx.transmit_live(&frame, ifindex, n as u32)?;
        sent += n;
    }
    Ok((sent, start.elapsed()))
}

pub(crate) fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("a valid MAC");
    }
    out
}

pub(crate) const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// Sends every frame through the target veth's NAPI, in a thread of its own: GRO on at the
/// target end (veth then has a NAPI instance), TSO off at the sending end (veth only hands
/// TSO-capable senders' UDP to NAPI if UDP GRO forwarding is on), threaded NAPI. Returns the
/// NAPI threads of that name that existed before (one may still be dying with an earlier run's
/// namespace: ours are the ones that appear now).
pub(crate) fn napi_in_own_thread(
    target: &Netns,
    outside: &Netns,
    t_if: &str,
    o_if: &str,
) -> Result<Vec<i32>> {
    use groundzero_lab::ab::cpu::{ethtool, GRO, TSO};
    let before = napi_threads(t_if)?;
    target
        .try_run(|| ethtool(t_if, GRO, Some(true)))?
        .with_context(|| format!("GRO on at {t_if}"))?;
    outside
        .try_run(|| ethtool(o_if, TSO, Some(false)))?
        .with_context(|| format!("TSO off at {o_if}"))?;
    netns_exec(
        target.name(),
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{t_if}/threaded"),
        ],
        None,
    )?;
    Ok(before)
}

/// Kernel threads polling a NAPI instance of an interface named `iface` (`napi/<iface>-<id>`),
/// in any namespace.
pub(crate) fn napi_threads(iface: &str) -> Result<Vec<i32>> {
    let prefix = format!("napi/{iface}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim_end().starts_with(&prefix) {
                found.push(pid);
            }
        }
    }
    Ok(found)
}

/// The one NAPI thread of `iface` that was not there before.
fn new_napi_thread(iface: &str, before: &[i32]) -> Result<i32> {
    let new: Vec<i32> = napi_threads(iface)?
        .into_iter()
        .filter(|pid| !before.contains(pid))
        .collect();
    match new.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no NAPI thread for {iface} (threaded NAPI did not take)"),
        more => bail!("several new NAPI threads for {iface}: {more:?}"),
    }
}

/// CPU time of a task, ns (`/proc/<tid>/schedstat`, first field).
pub(crate) fn schedstat_ns(tid: i32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .with_context(|| format!("reading /proc/{tid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("parsing schedstat")
}

fn cpu_idle_ticks(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&label))
        .context("cpu line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // idle + iowait
    Ok(fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

#[derive(Clone, Copy, Default)]
struct Drops {
    /// Frames the target veth's NAPI took off its ring (veth counts every one, whatever XDP
    /// then decides, as rx_packets).
    target_rx_packets: u64,
    /// UDP receive buffer overflows in the target namespace.
    rcvbuf: u64,
}

impl Drops {
    fn since(&self, earlier: &Drops) -> Drops {
        Drops {
            target_rx_packets: self
                .target_rx_packets
                .saturating_sub(earlier.target_rx_packets),
            rcvbuf: self.rcvbuf.saturating_sub(earlier.rcvbuf),
        }
    }
}

fn snapshot_drops(target: &Netns, t_if: &str) -> Result<Drops> {
    let out = Command::new("ip")
        .args(["-n", target.name(), "-s", "-j", "link", "show", "dev", t_if])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    let target_rx_packets = json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("rx packets of the target veth")?;
    let snmp = target.try_run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().context("Udp header")?,
        udp.next().context("Udp values")?,
    );
    let rcvbuf = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    Ok(Drops {
        target_rx_packets,
        rcvbuf,
    })
}
