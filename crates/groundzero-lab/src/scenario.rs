//! One phase of traffic across the whole lab: every peer runs legitimate clients while the
//! attackers do their part, all at once, each in its own namespace.
//!
//! Attackers take roles in turn: `atk1` (and `atk4`, `atk7`) floods spoofed UDP requests; `atk2`
//! sends a TCP SYN flood from spoofed sources and a trickle of malformed packets; `atk3` sends
//! invalid protocol messages from its real address. A flood's packets per second are shared by
//! the attackers that flood.

use std::{
    net::IpAddr,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use super::{
    raw::parse_mac,
    topology::{Host, LabState},
    traffic::{self, GenReport, LegitConfig, LegitReport, Limits, RawTarget},
};
use crate::netns::Netns;

/// What a phase sends. Rates of 0 turn a generator off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePlan {
    pub duration: Duration,
    /// Requests per second of each legitimate client (each peer runs one UDP client per
    /// address family, and one TCP client over IPv4).
    pub legit_pps: u32,
    /// The attacks start this long after the legitimate clients.
    pub attack_delay: Duration,
    /// The attacks stop this long before the phase ends (the tail shows recovery).
    pub attack_tail: Duration,
    /// Spoofed UDP request flood, packets per second over all flooding attackers.
    pub flood_pps: u32,
    /// Spoofed sources of the UDP flood, per family.
    pub flood_sources_v4: u16,
    pub flood_sources_v6: u16,
    /// Which 198.19.`block`.0/24 (and 2001:2:66:`block`::/64) the spoofed sources come from.
    pub source_block: u8,
    pub syn_pps: u32,
    pub malformed_pps: u32,
    pub invalid_pps: u32,
}

impl Default for PhasePlan {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            legit_pps: 50,
            attack_delay: Duration::from_secs(1),
            attack_tail: Duration::from_secs(1),
            flood_pps: 40_000,
            flood_sources_v4: 48,
            flood_sources_v6: 16,
            source_block: 1,
            syn_pps: 2_000,
            malformed_pps: 20,
            invalid_pps: 20,
        }
    }
}

impl PhasePlan {
    /// No attack at all.
    pub fn calm(duration: Duration, legit_pps: u32) -> Self {
        Self {
            duration,
            legit_pps,
            flood_pps: 0,
            syn_pps: 0,
            malformed_pps: 0,
            invalid_pps: 0,
            ..Self::default()
        }
    }

    fn attack_window(&self) -> Duration {
        self.duration
            .saturating_sub(self.attack_delay + self.attack_tail)
    }

    /// The spoofed sources the UDP flood uses.
    pub fn flood_sources(&self) -> Vec<IpAddr> {
        traffic::spoofed_sources(
            self.flood_sources_v4,
            self.flood_sources_v6,
            self.source_block,
        )
    }

    /// The spoofed sources of the SYN flood (the block after the UDP flood's).
    pub fn syn_sources(&self) -> Vec<IpAddr> {
        traffic::spoofed_sources(16, 16, self.source_block.wrapping_add(100))
    }
}

/// What a phase measured.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    pub legit: Vec<LegitReport>,
    pub attacks: Vec<GenReport>,
    pub elapsed: Duration,
    /// When the attacks began (for "banned within").
    pub attack_started: Instant,
}

impl PhaseReport {
    /// All legitimate clients together.
    pub fn legit_total(&self) -> LegitReport {
        LegitReport::merge(&self.legit)
    }

    pub fn attack_packets(&self) -> u64 {
        self.attacks.iter().map(|a| a.sent).sum()
    }
}

type Job<'a> = Box<dyn FnOnce() -> std::io::Result<GenReport> + Send + 'a>;

/// Which attacks each attacker runs (see the module doc).
fn role(index: usize) -> usize {
    index % 3
}

/// Runs `plan` across `lab`; `tick` is called about every 100 ms from this thread while the
/// traffic runs (for polling the daemon), with the time since the phase began. Generators that
/// fail to start (a missing namespace) report what failed as an error.
pub fn run_phase(
    lab: &LabState,
    plan: &PhasePlan,
    stop: &AtomicBool,
    mut tick: impl FnMut(Duration),
) -> std::io::Result<PhaseReport> {
    let started = Instant::now();
    let attack_started = started + plan.attack_delay;
    let floods = lab
        .attackers
        .iter()
        .enumerate()
        .filter(|(i, _)| role(*i) == 0)
        .count()
        .max(1) as u32;
    let flood_sources = plan.flood_sources();
    let syn_sources = plan.syn_sources();
    // Each attack is a job for a thread in its attacker's namespace.
    let mut jobs: Vec<(String, Job<'_>)> = Vec::new();
    for (i, atk) in lab.attackers.iter().enumerate() {
        let target = raw_target(lab, atk)?;
        let window = plan.attack_window();
        let ns = atk.netns.clone();
        match role(i) {
            0 if plan.flood_pps > 0 => {
                let (pps, sources) = (plan.flood_pps / floods, &flood_sources);
                let limits = Limits::for_duration(pps, window);
                jobs.push((
                    ns,
                    Box::new(move || traffic::udp_flood(&target, sources, limits, stop)),
                ));
            }
            1 => {
                if plan.syn_pps > 0 {
                    let (target, sources) = (target.clone(), &syn_sources);
                    let limits = Limits::for_duration(plan.syn_pps, window);
                    jobs.push((
                        ns.clone(),
                        Box::new(move || traffic::syn_flood(&target, sources, limits, stop)),
                    ));
                }
                if plan.malformed_pps > 0 {
                    let (v4, v6) = (atk.v4, atk.v6);
                    let limits = Limits::for_duration(plan.malformed_pps, window);
                    jobs.push((
                        ns,
                        Box::new(move || traffic::malformed_trickle(&target, v4, v6, limits, stop)),
                    ));
                }
            }
            2 if plan.invalid_pps > 0 => {
                let (src, node) = (IpAddr::from(atk.v4), IpAddr::from(lab.node_v4));
                let limits = Limits::for_duration(plan.invalid_pps, window);
                jobs.push((
                    ns,
                    Box::new(move || traffic::invalid_messages(src, node, true, limits, stop)),
                ));
            }
            _ => {}
        }
    }
    std::thread::scope(|scope| {
        let mut legit = Vec::new();
        for peer in &lab.peers {
            let clients: [(IpAddr, bool); 3] = [
                (peer.v4.into(), false),
                (peer.v6.into(), false),
                (peer.v4.into(), true),
            ];
            for (src, tcp) in clients {
                let cfg = LegitConfig::new(
                    src,
                    lab.node_addr_like(src),
                    Limits::for_duration(plan.legit_pps, plan.duration),
                );
                let ns = peer.netns.clone();
                legit.push(scope.spawn(move || {
                    in_netns(&ns, || {
                        if plan.legit_pps == 0 {
                            Ok(LegitReport::default())
                        } else if tcp {
                            traffic::legit_tcp(&cfg, stop)
                        } else {
                            traffic::legit_udp(&cfg, stop)
                        }
                    })
                }));
            }
        }
        let attacks: Vec<_> = jobs
            .into_iter()
            .map(|(ns, job)| {
                scope.spawn(move || {
                    std::thread::sleep(attack_started.saturating_duration_since(Instant::now()));
                    in_netns(&ns, job)
                })
            })
            .collect();
        while !legit.iter().all(|h| h.is_finished()) || !attacks.iter().all(|h| h.is_finished()) {
            tick(started.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(PhaseReport {
            legit: legit.into_iter().map(join).collect::<Result<_, _>>()?,
            attacks: attacks.into_iter().map(join).collect::<Result<_, _>>()?,
            elapsed: started.elapsed(),
            attack_started,
        })
    })
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn raw_target(lab: &LabState, atk: &Host) -> std::io::Result<RawTarget> {
    let mac = |s: &str| {
        parse_mac(s).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad MAC {s}"))
        })
    };
    Ok(RawTarget {
        iface: atk.iface.clone(),
        src_mac: mac(&atk.mac)?,
        node_mac: mac(&lab.node_mac)?,
        node_v4: lab.node_v4,
        node_v6: lab.node_v6,
    })
}

fn in_netns<T: Send>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let ns = Netns::open(name).map_err(std::io::Error::other)?;
    ns.try_run(f).map_err(std::io::Error::other)?
}
