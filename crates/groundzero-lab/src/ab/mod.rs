//! The journey's A/B: the same measured traffic through the lab twice, with the node's XDP
//! program attached (run A) and detached (run B), the observers and tracing left as they are.
//!
//! - Probes ([`probe`]): UDP from the first peer to the node, each timed by socket timestamps in
//!   both runs alike; stages wire → stack, stack → application and end to end, with p50/p99 and
//!   order-statistic confidence intervals ([`stats`]).
//! - CPU per packet on the receiving side ([`cpu`]): the node veth's NAPI thread (threaded NAPI,
//!   GRO on for both runs, restored afterwards) plus the reading thread.
//! - What a blocked packet costs: a bounded burst from the first attacker, dropped by XDP (the
//!   attacker blocklisted, run A's setup), by an nftables rule and at a closed port (run B's):
//!   the NAPI thread's CPU per packet the interface received.
//!
//! Only the lab's node interface is ever detached: [`check_lab_interface`] refuses anything else.

pub mod cpu;
pub mod probe;
pub mod stats;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use groundzero_api::journey_ab::{AbReport, AbRun, AbStage, DropCost};

use crate::{netns::Netns, topology::LabState};

/// UDP port of the drop-cost bursts: `discard`, which nothing in the node listens on.
const BURST_PORT: u16 = 9;
/// The longest a burst may take, whatever its size.
pub const BURST_LIMIT: Duration = Duration::from_secs(4);
/// The longest one run's probes may take, however many were asked for.
pub const PROBE_LIMIT: Duration = Duration::from_secs(8);
/// The longest an A/B may take: two probe runs, five bursts (one after each probe run, three
/// drop costs) each with its 100 ms settling and the reader's 100 ms timeout, and 5 s for the
/// switches, nft and sysfs. Whoever serves the A/B over a request with a timeout checks that
/// this fits in it.
pub const WORST_CASE: Duration = Duration::from_millis(
    2 * (PROBE_LIMIT.as_millis() as u64 + 200) + 5 * (BURST_LIMIT.as_millis() as u64 + 200) + 5_000,
);
const NAPI_HOW: &str = "CPU time (schedstat) of the node veth's NAPI thread (threaded NAPI, GRO \
                        on) over the burst";

#[derive(Debug, thiserror::Error)]
pub enum AbError {
    #[error("refusing the A/B on {interface}: {why}; the A/B detaches XDP, so it runs only on the lab's node interface (`groundzero lab up`)")]
    NotLab { interface: String, why: String },
    #[error(transparent)]
    Lab(#[from] crate::LabError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the A/B: {0}")]
    Setup(String),
    #[error("switching XDP for the A/B: {0}")]
    Switch(String),
    #[error("the A/B measured nothing in {run}: {why}")]
    Nothing { run: String, why: String },
}

impl AbError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AbError {
        let what = what.into();
        move |source| AbError::Io { what, source }
    }
}

/// What the A/B asks of whoever holds the XDP program (the daemon).
pub trait XdpSwitch {
    /// Attaches (`true`) or detaches (`false`) the program on the lab's node interface.
    fn set_attached(&mut self, attached: bool) -> Result<(), String>;
    /// Blocks or unblocks one source in the program's lists (for the XDP drop cost).
    fn set_blocked(&mut self, addr: IpAddr, blocked: bool) -> Result<(), String>;
    /// Packets the program has counted on the lab's node interface (all verdicts), if
    /// attached and readable: what CPU per packet divides by while XDP is attached.
    fn xdp_packets(&self) -> Option<u64>;
}

/// How much to measure.
#[derive(Clone, Debug)]
pub struct AbPlan {
    pub probes: u32,
    pub gap: Duration,
    pub flood_packets: u32,
    /// Run A's label: "with XDP (attached, native; journey tracing 1 in 64 (any))".
    pub attached_label: String,
    /// Run B's label: "without XDP (detached; ...)".
    pub detached_label: String,
}

/// `interface` must be the node interface of the lab that is up, and the caller must be in the
/// node's namespace (the interface it would detach is the lab's, not a real one of that name).
pub fn check_lab_interface(interface: &str) -> Result<LabState, AbError> {
    let refuse = |why: String| AbError::NotLab {
        interface: interface.into(),
        why,
    };
    let state = LabState::load()?.ok_or_else(|| refuse("no lab is up".into()))?;
    if interface != state.node_if {
        return Err(refuse(format!(
            "it is not the lab's node interface ({})",
            state.node_if
        )));
    }
    let inode = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    // The calling thread's namespace: a daemon may run its threads in another than its main one.
    let here = inode("/proc/thread-self/ns/net")
        .map_err(AbError::io("reading /proc/thread-self/ns/net"))?;
    let node_ns = format!("/run/netns/{}", state.node_ns);
    let node = inode(&node_ns).map_err(AbError::io(format!("reading {node_ns}")))?;
    if here != node {
        return Err(refuse(format!(
            "this process is not in the lab's node namespace {}",
            state.node_ns
        )));
    }
    Ok(state)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Runs the A/B in `state`'s lab; the program is attached again however it ends.
pub fn run(
    state: &LabState,
    plan: &AbPlan,
    switch: &mut dyn XdpSwitch,
) -> Result<AbReport, AbError> {
    let unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let load = load();
    let peer = state
        .peers
        .first()
        .ok_or_else(|| AbError::Setup("the lab has no peer to send probes".into()))?;
    let attacker = state
        .attackers
        .first()
        .ok_or_else(|| AbError::Setup("the lab has no attacker to send blocked packets".into()))?;
    let node_ns = Netns::open(&state.node_ns)?;
    let peer_ns = Netns::open(&peer.netns)?;
    let atk_ns = Netns::open(&attacker.netns)?;
    let accounting = cpu::Accounting::set_up(&state.node_ns, &state.node_if)?;
    let ctx = Ctx {
        state,
        plan,
        node_ns: &node_ns,
        peer_ns: &peer_ns,
        peer_v4: peer.v4,
        atk_ns: &atk_ns,
        atk_v4: attacker.v4,
        accounting: &accounting,
    };

    let a = ctx.probe_run(true, &plan.attached_label, Some(&*switch))?;
    switch
        .set_blocked(attacker.v4.into(), true)
        .map_err(AbError::Switch)?;
    let xdp_drop = ctx.drop_cost(
        DropCost::XDP_DROP,
        "XDP_DROP (the attacker blocklisted, XDP attached)",
        Some(&*switch),
    );
    switch
        .set_blocked(attacker.v4.into(), false)
        .map_err(AbError::Switch)?;
    let xdp_drop = xdp_drop?;

    switch.set_attached(false).map_err(AbError::Switch)?;
    // From here on the program is attached again however run B ends, a panic included.
    let mut detached = Detached {
        switch,
        reattached: false,
    };
    let result = ctx.detached_runs();
    detached.reattach()?;
    let (b, nft, closed) = result?;
    drop(accounting);
    Ok(AbReport {
        blocked: vec![xdp_drop, nft, closed],
        ci_method: stats::CI_METHOD.into(),
        interface: state.node_if.clone(),
        load,
        runs: vec![a, b],
        unix_ms,
    })
}

/// The program detached: [`Detached::reattach`] attaches it again, and so does dropping it
/// (a panic in run B), so the node is never left unprotected by the A/B.
struct Detached<'a> {
    switch: &'a mut dyn XdpSwitch,
    reattached: bool,
}

impl Detached<'_> {
    /// Attaches the program again, trying a few times: a failure leaves the node without its
    /// firewall, so it is retried and then reported loudly.
    fn reattach(&mut self) -> Result<(), AbError> {
        let mut last = String::new();
        for attempt in 1..=REATTACH_ATTEMPTS {
            match self.switch.set_attached(true) {
                Ok(()) => {
                    self.reattached = true;
                    return Ok(());
                }
                Err(e) => {
                    log::error!("the A/B could not attach XDP again (attempt {attempt}): {e}");
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        self.reattached = true; // tried; Drop must not try again
        Err(AbError::Switch(format!(
            "XDP is NOT attached again after the A/B ({REATTACH_ATTEMPTS} attempts): {last}"
        )))
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        if !self.reattached {
            if let Err(e) = self.reattach() {
                log::error!("{e}");
            }
        }
    }
}

const REATTACH_ATTEMPTS: u32 = 3;

/// The A/B's nftables table in the node's namespace, deleted when dropped (a panic included).
struct NftTable<'a> {
    node_ns: &'a str,
    name: String,
    deleted: bool,
}

impl NftTable<'_> {
    fn delete(&mut self) -> Result<(), AbError> {
        self.deleted = true;
        nft(self.node_ns, &format!("delete table inet {}\n", self.name))
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            if let Err(e) = self.delete() {
                log::error!("the A/B's nftables table {} is left: {e}", self.name);
            }
        }
    }
}

fn nft(node_ns: &str, script: &str) -> Result<(), AbError> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", node_ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(AbError::io("running nft in the node's namespace"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(AbError::io("writing nft's script"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(AbError::io("waiting for nft"))?;
    if !out.status.success() {
        return Err(AbError::Setup(format!(
            "nft {script}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

struct Ctx<'a> {
    state: &'a LabState,
    plan: &'a AbPlan,
    node_ns: &'a Netns,
    peer_ns: &'a Netns,
    peer_v4: Ipv4Addr,
    atk_ns: &'a Netns,
    atk_v4: Ipv4Addr,
    accounting: &'a cpu::Accounting,
}

impl Ctx<'_> {
    /// Run B and the stack's drop costs, with the program detached.
    fn detached_runs(&self) -> Result<(AbRun, DropCost, DropCost), AbError> {
        // The bridge's end of the node's veth (see topology): its sender towards the node.
        let port = format!("{}b-node", crate::topology::LINK_PREFIX);
        let _tso = cpu::sender_without_tso(crate::topology::BRIDGE_NS, &port)?;
        let b = self.probe_run(false, &self.plan.detached_label, None)?;
        let name = format!("gz_ab_{}", std::process::id());
        nft(
            &self.state.node_ns,
            &format!(
                "table inet {name} {{\n  chain input {{\n    type filter hook input priority \
                 filter; policy accept;\n    ip saddr {} udp dport {BURST_PORT} drop\n  }}\n}}\n",
                self.atk_v4
            ),
        )?;
        let mut table = NftTable {
            node_ns: &self.state.node_ns,
            name,
            deleted: false,
        };
        let nft = self.drop_cost(
            DropCost::NFT_DROP,
            "nftables drop rule in the input hook (XDP detached)",
            None,
        );
        let removed = table.delete();
        let nft = nft?;
        removed?;
        let closed = self.drop_cost(
            DropCost::CLOSED_PORT,
            "closed port: the stack drops it and answers ICMP unreachable (XDP detached)",
            None,
        )?;
        Ok((b, nft, closed))
    }

    fn probe_run(
        &self,
        xdp_attached: bool,
        label: &str,
        xdp: Option<&dyn XdpSwitch>,
    ) -> Result<AbRun, AbError> {
        let node_v4 = self.state.node_v4;
        let rx = self
            .node_ns
            .try_run(|| probe::receiver(SocketAddr::new(node_v4.into(), 0)))??;
        let to = rx
            .local_addr()
            .map_err(AbError::io("the receiver's port"))?;
        let peer_v4 = self.peer_v4;
        let tx = self
            .peer_ns
            .try_run(|| probe::sender(SocketAddr::new(peer_v4.into(), 0), to))??;
        self.accounting.set_threaded(false)?;
        let probed = probe::run(&tx, &rx, self.plan.probes, self.plan.gap, PROBE_LIMIT)?;
        if probed.stamps.is_empty() {
            return Err(AbError::Nothing {
                run: label.into(),
                why: format!(
                    "{} probes sent from {} to {to}, none came back with all three timestamps",
                    probed.sent, self.peer_v4
                ),
            });
        }
        let n = probed.stamps.len() as u64;
        let passed = self.burst(Some(rx), xdp)?;
        let cpu_ns_per_packet = passed
            .napi_ns
            .zip(passed.reader_ns)
            .filter(|_| passed.packets > 0)
            .map(|(napi, reader)| (napi + reader) as f64 / passed.packets as f64);
        let stage = |name: &str, label: &str, how: &str, f: fn(&probe::Stamps) -> i64| {
            let mut v: Vec<f64> = probed.stamps.iter().map(|s| f(s) as f64).collect();
            v.sort_by(f64::total_cmp);
            let p50 = stats::estimate(&v, 0.5).expect("at least one sample");
            let p99 = stats::estimate(&v, 0.99).expect("at least one sample");
            AbStage {
                count: n,
                how: how.into(),
                label: label.into(),
                name: name.into(),
                p50,
                p99,
            }
        };
        Ok(AbRun {
            cpu_ns_per_packet,
            cpu_how: format!(
                "a burst of {} UDP packets from the peer to the probes' socket, read by the \
                 application: CPU time (schedstat) of the node veth's NAPI thread (threaded NAPI \
                 for this burst, GRO on) and of the reading thread, divided by {}",
                self.plan.flood_packets,
                passed.divided_by()
            ),
            label: label.into(),
            probes_measured: n,
            probes_sent: probed.sent,
            stages: vec![
                stage(
                    AbStage::WIRE_TO_STACK,
                    "wire → stack",
                    "sender's software TX stamp (peer's veth driver) to the receiver's \
                     software RX stamp (the stack takes the skb): the lab's bridge, the node's \
                     NAPI and XDP if attached",
                    |s| s.rx - s.tx,
                ),
                stage(
                    AbStage::STACK_TO_APP,
                    "stack → application",
                    "receiver's software RX stamp to the application's read (CLOCK_REALTIME \
                     right after recvmsg returns)",
                    |s| s.app - s.rx,
                ),
                stage(
                    AbStage::END_TO_END,
                    "wire → application",
                    "sender's software TX stamp to the application's read",
                    |s| s.app - s.tx,
                ),
            ],
            xdp_attached,
        })
    }

    /// A blocked burst from the attacker: what each packet cost the node.
    fn drop_cost(
        &self,
        name: &str,
        label: &str,
        xdp: Option<&dyn XdpSwitch>,
    ) -> Result<DropCost, AbError> {
        let b = self.burst(None, xdp)?;
        let how = if name == DropCost::XDP_DROP {
            format!(
                "{NAPI_HOW}, divided by {}; on veth XDP copies each skb a socket sent into a new \
                 page (it has less than XDP's 256 bytes of headroom), which a NIC driver's XDP \
                 does not pay",
                b.divided_by()
            )
        } else {
            format!("{NAPI_HOW}, divided by {}", b.divided_by())
        };
        Ok(DropCost {
            cpu_ns_per_packet: b
                .napi_ns
                .filter(|_| b.packets > 0)
                .map(|ns| ns as f64 / b.packets as f64),
            how,
            label: label.into(),
            name: name.into(),
            packets: b.packets,
        })
    }

    /// A bounded burst of [`AbPlan::flood_packets`] UDP packets, NAPI in its own thread: to
    /// `reader`'s port from the peer (passed packets, read by a thread), or from the attacker
    /// to the discard port (blocked ones).
    fn burst(
        &self,
        reader: Option<UdpSocket>,
        xdp: Option<&dyn XdpSwitch>,
    ) -> Result<Burst, AbError> {
        let (from_ns, from_v4, to) = match &reader {
            Some(r) => (
                self.peer_ns,
                self.peer_v4,
                r.local_addr().map_err(AbError::io("the receiver's port"))?,
            ),
            None => (
                self.atk_ns,
                self.atk_v4,
                SocketAddr::new(self.state.node_v4.into(), BURST_PORT),
            ),
        };
        let socket: UdpSocket = from_ns.try_run(|| {
            UdpSocket::bind(SocketAddr::new(from_v4.into(), 0))
                .map_err(AbError::io(format!("binding {from_v4}")))
        })??;
        self.accounting.set_threaded(true)?;
        let rx_before = cpu::rx_packets(&self.state.node_ns, &self.state.node_if)?;
        let xdp_before = xdp.and_then(|x| x.xdp_packets());
        let napi_before = self.accounting.napi_ns();
        let done = std::sync::atomic::AtomicBool::new(false);
        let reader_ns = std::thread::scope(|scope| {
            let reading = reader.as_ref().map(|r| {
                let done = &done;
                scope.spawn(move || {
                    let start = cpu::this_thread_ns();
                    let mut buf = [0u8; 64];
                    // The receiver's 100 ms read timeout ends the loop once the burst is over.
                    while r.recv(&mut buf).is_ok()
                        || !done.load(std::sync::atomic::Ordering::Relaxed)
                    {}
                    start.zip(cpu::this_thread_ns()).map(|(a, b)| b - a)
                })
            });
            let start = Instant::now();
            let payload = [0u8; 18];
            for _ in 0..self.plan.flood_packets {
                // Full queues (ENOBUFS) are part of a flood: the packet is simply not sent.
                let _ = socket.send_to(&payload, to);
                if start.elapsed() > BURST_LIMIT {
                    break;
                }
            }
            // Let the NAPI thread finish what is queued before reading its time.
            std::thread::sleep(Duration::from_millis(100));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reading.and_then(|h| h.join().expect("the burst reader does not panic"))
        });
        let napi_ns = napi_before
            .zip(self.accounting.napi_ns())
            .map(|(a, b)| b.saturating_sub(a));
        let rx_packets =
            cpu::rx_packets(&self.state.node_ns, &self.state.node_if)?.saturating_sub(rx_before);
        let xdp_packets = xdp_before
            .zip(xdp.and_then(|x| x.xdp_packets()))
            .map(|(a, b)| b.saturating_sub(a));
        self.accounting.set_threaded(false)?;
        Ok(Burst::new(rx_packets, xdp_packets, napi_ns, reader_ns))
    }
}

/// What a burst cost.
struct Burst {
    /// What CPU per packet divides by: the program's count where XDP is attached, else the
    /// interface's.
    packets: u64,
    /// The interface's rx counter's delta (what it counts of XDP's verdicts is the driver's
    /// choice).
    rx_packets: u64,
    /// The program's count on the interface, while attached.
    xdp_packets: Option<u64>,
    napi_ns: Option<u64>,
    reader_ns: Option<u64>,
}

impl Burst {
    fn new(
        rx_packets: u64,
        xdp_packets: Option<u64>,
        napi_ns: Option<u64>,
        reader_ns: Option<u64>,
    ) -> Burst {
        Burst {
            packets: xdp_packets.unwrap_or(rx_packets),
            rx_packets,
            xdp_packets,
            napi_ns,
            reader_ns,
        }
    }

    /// Which count the CPU was divided by, and the other one to cross-check it.
    fn divided_by(&self) -> String {
        match self.xdp_packets {
            Some(xdp) => format!(
                "the packets the XDP program counted on the interface ({xdp}; the interface's \
                 rx counter: {})",
                self.rx_packets
            ),
            None => format!(
                "the packets the interface received (rx counter: {}; XDP not attached)",
                self.rx_packets
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_packet_divides_by_the_programs_count_where_attached() {
        // Where XDP is attached, the program's own count is the divisor, whatever the driver's.
        let b = Burst::new(3, Some(20_000), Some(1), None);
        assert_eq!(b.packets, 20_000);
        assert!(
            b.divided_by().contains("XDP program counted")
                && b.divided_by().contains("rx counter: 3")
        );
        let b = Burst::new(19_000, None, Some(1), None);
        assert_eq!(b.packets, 19_000);
        assert!(b.divided_by().contains("XDP not attached"));
    }

    /// Counts attach calls; fails the first `failures` of them.
    struct Fake {
        attaches: u32,
        failures: u32,
    }

    impl XdpSwitch for Fake {
        fn set_attached(&mut self, attached: bool) -> Result<(), String> {
            assert!(attached, "the guard only ever attaches");
            self.attaches += 1;
            if self.attaches <= self.failures {
                return Err(format!("attempt {} refused", self.attaches));
            }
            Ok(())
        }
        fn set_blocked(&mut self, _: IpAddr, _: bool) -> Result<(), String> {
            Ok(())
        }
        fn xdp_packets(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn a_panic_while_detached_attaches_again() {
        let mut fake = Fake {
            attaches: 0,
            failures: 1,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _detached = Detached {
                switch: &mut fake,
                reattached: false,
            };
            panic!("run B panics");
        }));
        assert!(result.is_err());
        // The first attempt failed, the retry attached it.
        assert_eq!(fake.attaches, 2);
    }

    #[test]
    fn a_reattach_that_keeps_failing_is_an_error_and_not_retried_on_drop() {
        let mut fake = Fake {
            attaches: 0,
            failures: u32::MAX,
        };
        {
            let mut detached = Detached {
                switch: &mut fake,
                reattached: false,
            };
            let e = detached.reattach().unwrap_err().to_string();
            assert!(
                e.contains("NOT attached again") && e.contains("attempt 3 refused"),
                "{e}"
            );
        }
        assert_eq!(fake.attaches, REATTACH_ATTEMPTS);
        // Reattached explicitly: dropping attaches nothing more.
        let mut ok = Fake {
            attaches: 0,
            failures: 0,
        };
        {
            let mut detached = Detached {
                switch: &mut ok,
                reattached: false,
            };
            detached.reattach().unwrap();
        }
        assert_eq!(ok.attaches, 1);
    }

    #[test]
    fn the_longest_ab_is_bounded() {
        // Two probe runs, five bursts and the switches: well under a minute.
        assert!(WORST_CASE < Duration::from_secs(45), "{WORST_CASE:?}");
    }
}
