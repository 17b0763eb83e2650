//! Journey tracing in the kernel: real UDP and TCP through a veth pair into sockets an
//! application reads, from an allowed and a blocked source; plus a packet the kernel drops
//! itself (no listener). Addresses are from 198.18.0.0/15 and 2001:2::/48 only; every loop is
//! bounded in count and time.
mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use groundzero::{
    journey::{Assembler, FlowFilter, Journey, JourneyStats, Kallsyms, KernelInfo, Outcome},
    netns::{veth, Netns},
    AttachMode, IpNet, Shield,
};

const NODE_MAC: &str = "02:e2:e0:00:01:01";
const PEER_MAC: &str = "02:e2:e0:00:01:02";
const NODE: [&str; 2] = ["198.18.7.1", "2001:2:7::1"];
const GOOD: [&str; 2] = ["198.18.7.2", "2001:2:7::2"];
const BAD: [&str; 2] = ["198.18.7.3", "2001:2:7::3"];
const N: usize = 20;

struct Lab {
    shield: Shield,
    node: Netns,
    peer: Netns,
    kernel: KernelInfo,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let mut shield = common::shield();
        let node = Netns::create(&format!("jn{tag}")).unwrap();
        let peer = Netns::create(&format!("jp{tag}")).unwrap();
        for ns in [&node, &peer] {
            for (k, v) in [
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.addr_gen_mode", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(k, v).unwrap();
            }
        }
        let (node_if, peer_if) = (format!("gzj-n{tag}"), format!("gzj-p{tag}"));
        veth(&node, &node_if, &peer, &peer_if).unwrap();
        node.ip(&["link", "set", "dev", &node_if, "address", NODE_MAC])
            .unwrap();
        peer.ip(&["link", "set", "dev", &peer_if, "address", PEER_MAC])
            .unwrap();
        for i in 0..2 {
            let plen = if i == 0 { "24" } else { "64" };
            node.ip(&[
                "addr",
                "add",
                &format!("{}/{plen}", NODE[i]),
                "dev",
                &node_if,
                "nodad",
            ][..if i == 0 { 5 } else { 6 }])
                .unwrap();
            for src in [GOOD[i], BAD[i]] {
                peer.ip(&[
                    "addr",
                    "add",
                    &format!("{src}/{plen}"),
                    "dev",
                    &peer_if,
                    "nodad",
                ][..if i == 0 { 5 } else { 6 }])
                    .unwrap();
                node.ip(&[
                    "neigh",
                    "add",
                    src,
                    "lladdr",
                    PEER_MAC,
                    "dev",
                    &node_if,
                    "nud",
                    "permanent",
                ])
                .unwrap();
            }
            peer.ip(&[
                "neigh",
                "add",
                NODE[i],
                "lladdr",
                NODE_MAC,
                "dev",
                &peer_if,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        for bad in BAD {
            shield
                .block(IpNet::from(bad.parse::<IpAddr>().unwrap()))
                .unwrap();
        }
        node.run(|| shield.attach(&node_if, AttachMode::Native))
            .unwrap();
        let kernel = KernelInfo::from_running_kernel().unwrap();
        Lab {
            shield,
            node,
            peer,
            kernel,
        }
    }
}

/// Drains the ring until `want(journeys)` holds or 5 s pass.
fn collect(
    events: &mut groundzero::journey::JourneyEvents,
    asm: &mut Assembler,
    want: impl Fn(&[Journey]) -> bool,
) -> Vec<Journey> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !want(&out) {
        events.drain(|ev| {
            if let Some(j) = asm.feed(ev) {
                out.push(j);
            }
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[test]
fn udp_and_tcp_journeys_from_allowed_and_blocked_sources() {
    let mut lab = Lab::new("a");
    let mut events = lab.shield.journey_events().unwrap();
    let missing = lab
        .shield
        .start_journey(&lab.kernel, 1, FlowFilter::default())
        .unwrap();
    // Tracepoint stages work on every kernel with BTF; fentry stages only where the kernel
    // allows trampolines, and each missing one says why.
    for m in &missing {
        assert!(
            ["ip", "transport"].contains(&m.stage) && !m.why.is_empty(),
            "{m:?}"
        );
    }
    let have = |stage: &str| !missing.iter().any(|m| m.stage == stage);
    let mut udp_stages = vec!["xdp", "xdp_verdict", "gro", "stack"];
    udp_stages.extend(["ip", "transport"].into_iter().filter(|s| have(s)));
    udp_stages.extend(["socket", "app"]);
    let mut asm = Assembler::with_symbols(2_000_000_000, Kallsyms::load().unwrap());

    // UDP: an application reads every datagram.
    for i in 0..2 {
        let node_addr: SocketAddr = SocketAddr::new(NODE[i].parse().unwrap(), 7000);
        let server = lab.node.run(|| UdpSocket::bind(node_addr)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        lab.peer.run(|| {
            for src in [GOOD[i], BAD[i]] {
                let s = UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
                for n in 0..N {
                    s.send_to(format!("ping {n}").as_bytes(), node_addr)
                        .unwrap();
                }
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 64];
        while server.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, N, "only the allowed source's datagrams arrive");
    }
    let journeys = collect(&mut events, &mut asm, |j| j.len() >= 4 * N);
    let mut by: HashMap<(String, Outcome), usize> = HashMap::new();
    for j in &journeys {
        if !by.contains_key(&(j.src.to_string(), j.outcome)) {
            eprintln!("{j:?}");
        }
        *by.entry((j.src.to_string(), j.outcome)).or_default() += 1;
        // Timestamps never go backwards along a journey.
        assert!(j.hops.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{j:?}");
        if j.outcome == Outcome::Delivered {
            let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
            assert_eq!(stages, udp_stages, "{j:?}");
            assert_eq!(j.protocol_name(), "udp");
            assert_eq!(j.dst_port, 7000);
        }
        if j.outcome == Outcome::XdpDrop {
            assert_eq!(j.hops.len(), 2);
            assert_eq!(j.reason, groundzero::Reason::BlockedExact);
        }
    }
    eprintln!("{by:?} counts={:?} pending={}", asm.counts, asm.pending());
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    for j in asm
        .expire(now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64 + 10_000_000_000)
        .iter()
        .take(3)
    {
        eprintln!("{j:?}");
    }
    for i in 0..2 {
        assert_eq!(
            by.get(&(GOOD[i].to_string(), Outcome::Delivered)),
            Some(&N),
            "{by:?}"
        );
        assert_eq!(
            by.get(&(BAD[i].to_string(), Outcome::XdpDrop)),
            Some(&N),
            "{by:?}"
        );
    }
    let mut stats = JourneyStats::new();
    for j in journeys {
        stats.record(j);
    }
    for l in stats.stages() {
        eprintln!(
            "{:>12} n={:<4} p50={:>7} ns p99={:>7} ns",
            l.stage, l.count, l.p50_ns, l.p99_ns
        );
    }
    lab.shield.stop_journey().unwrap();
}
