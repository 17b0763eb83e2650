//! End to end through real sockets: two network namespaces joined by a veth pair, the shield
//! attached natively to the target's end, and traffic from blocked, prefix-blocked and allowed
//! sources (UDP, ICMP echo, TCP), IPv4 and IPv6. Checks what arrives, what the kernel answers,
//! and that the per-reason counters and per-entry hits move by exactly what was sent.
//!
//! Every address is from the benchmarking ranges 198.18.0.0/15 and 2001:2::/48, and every packet
//! stays inside the namespaces made here. Every loop is bounded in count and time.
mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type};
use groundzero::{parse_entry, ActiveMode, AttachMode, Counters, IpNet, Reason, Shield};
use groundzero_common::maps::Counter;
use groundzero_lab::netns::{veth, Netns, NetnsError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Fixed MACs, so both sides can have permanent neighbour entries for each other.
const PEER_MAC: &str = "02:e2:e0:00:00:02";
const TARGET_MAC: &str = "02:e2:e0:00:00:01";

/// Datagrams / echo requests per source. Well under the veth XDP ring (256 frames), so nothing
/// is dropped before the program sees it.
const N: u64 = 50;
const M: u64 = 20;
const UDP_PAYLOAD: usize = 64;
const ICMP_PAYLOAD: usize = 32;
const ETH_HLEN: u64 = 14;

/// How long to wait for something that should happen (counters catching up, replies arriving)
/// and for something that should not (a blocked packet sneaking through).
const SHOULD_HAPPEN: Duration = Duration::from_secs(5);
const SHOULD_NOT: Duration = Duration::from_millis(300);

/// The addresses of one family: the target, a source blocked exactly, a source inside a blocked
/// prefix, and an allowlisted source.
#[derive(Clone, Copy, Debug)]
struct Family {
    target: IpAddr,
    target_prefix: u8,
    blocked: IpAddr,
    in_cidr: IpAddr,
    cidr: &'static str,
    allowed: IpAddr,
    ip_hlen: u64,
}

impl Family {
    fn v4() -> Self {
        Family {
            target: Ipv4Addr::new(198, 18, 0, 1).into(),
            target_prefix: 15,
            blocked: Ipv4Addr::new(198, 18, 0, 2).into(),
            in_cidr: Ipv4Addr::new(198, 19, 5, 5).into(),
            cidr: "198.19.5.0/24",
            allowed: Ipv4Addr::new(198, 18, 0, 3).into(),
            ip_hlen: 20,
        }
    }

    fn v6() -> Self {
        let a = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        Family {
            target: a("2001:2::1"),
            target_prefix: 48,
            blocked: a("2001:2::2"),
            in_cidr: a("2001:2:0:5::5"),
            cidr: "2001:2:0:5::/64",
            allowed: a("2001:2::3"),
            ip_hlen: 40,
        }
    }

    fn sources(&self) -> [IpAddr; 3] {
        [self.blocked, self.in_cidr, self.allowed]
    }

    fn host(addr: IpAddr) -> IpNet {
        IpNet::from(addr)
    }
}

/// A shield attached to the target end of a veth pair; the peer holds every source address of
/// both families. Fields drop in order: the shield detaches before the namespaces go.
struct Lab {
    shield: Shield,
    peer: Netns,
    target: Netns,
}

impl Lab {
    /// `tag` (at most 4 characters) keeps namespaces and interfaces of tests running in
    /// parallel apart.
    fn new(tag: &str) -> Lab {
        let mut shield = common::shield();
        let peer = Netns::create(&format!("e2e-p{tag}")).unwrap();
        let target = Netns::create(&format!("e2e-t{tag}")).unwrap();
        for ns in [&peer, &target] {
            // Set on `default` before the veth exists, so that its ends inherit them: no
            // link-local address (hence no DAD, no router solicitation, nothing from fe80::)
            // and no RA processing.
            for (key, value) in [
                ("net.ipv6.conf.all.accept_ra", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv6.conf.default.router_solicitations", "0"),
                ("net.ipv6.conf.default.addr_gen_mode", "1"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                // 198.19.5.5 is on-link via the /15, but rp_filter is inherited from the host
                // and should not get a say.
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(key, value).unwrap();
            }
        }
        let peer_if = format!("gze2e-p{tag}");
        let target_if = format!("gze2e-t{tag}");
        veth(&peer, &peer_if, &target, &target_if).unwrap();
        peer.ip(&["link", "set", "dev", &peer_if, "address", PEER_MAC])
            .unwrap();
        // NOARP on the sending end: the kernel then joins no solicited-node groups for its IPv6
        // addresses (addrconf_join_solict), so it sends no MLD reports. Without this, one or two
        // 130-byte reports from :: reach the program up to ~200 ms after setup and land in
        // whatever is being measured as NoMatch. The permanent neighbours below replace what
        // ARP and neighbour discovery would have found.
        peer.ip(&["link", "set", "dev", &peer_if, "arp", "off"])
            .unwrap();
        target
            .ip(&["link", "set", "dev", &target_if, "address", TARGET_MAC])
            .unwrap();

        // Static neighbours on both sides for every address: no ARP or neighbour discovery ever
        // reaches the program, so the only frames it sees are the ones the test sends.
        for family in [Family::v4(), Family::v6()] {
            let target_addr = format!("{}/{}", family.target, family.target_prefix);
            let mut args = vec![
                "addr",
                "add",
                target_addr.as_str(),
                "dev",
                target_if.as_str(),
            ];
            if family.target.is_ipv6() {
                args.push("nodad");
            }
            target.ip(&args).unwrap();
            let target_ip = family.target.to_string();
            peer.ip(&[
                "neigh",
                "add",
                &target_ip,
                "lladdr",
                TARGET_MAC,
                "dev",
                &peer_if,
                "nud",
                "permanent",
            ])
            .unwrap();
            for source in family.sources() {
                let addr = format!("{source}/{}", family.target_prefix);
                let mut args = vec!["addr", "add", addr.as_str(), "dev", peer_if.as_str()];
                if source.is_ipv6() {
                    args.push("nodad");
                }
                peer.ip(&args).unwrap();
                let source = source.to_string();
                target
                    .ip(&[
                        "neigh",
                        "add",
                        &source,
                        "lladdr",
                        PEER_MAC,
                        "dev",
                        &target_if,
                        "nud",
                        "permanent",
                    ])
                    .unwrap();
            }
        }

        for family in [Family::v4(), Family::v6()] {
            shield.block(Family::host(family.blocked)).unwrap();
            shield.block(parse_entry(family.cidr).unwrap()).unwrap();
            shield.allow(Family::host(family.allowed)).unwrap();
        }
        let mode = target
            .run(|| shield.attach(&target_if, AttachMode::Auto))
            .unwrap();
        assert_eq!(mode, ActiveMode::Native, "veth supports native XDP");

        let lab = Lab {
            shield,
            peer,
            target,
        };
        lab.assert_quiet();
        lab
    }

    /// The counters only ever move by what a test sends: after setup, the program has seen
    /// nothing at all. Waits a little so that late setup traffic would show here, with a clear
    /// message, rather than as an off-by-one in some measurement.
    fn assert_quiet(&self) {
        std::thread::sleep(Duration::from_millis(100));
        let seen = self.counters();
        assert_eq!(
            seen.total(),
            Counter::default(),
            "the program saw frames nobody sent: {seen:?}"
        );
    }

    fn counters(&self) -> Counters {
        self.shield.counters().unwrap()
    }

    /// Hits of the list entry `net` (blocked or allowed).
    fn hits(&self, net: IpNet) -> u64 {
        let mut entries = self.shield.blocked().unwrap();
        entries.extend(self.shield.allowed().unwrap());
        entries
            .iter()
            .find(|e| e.net == net)
            .unwrap_or_else(|| panic!("{net} is in no list: {entries:?}"))
            .hits
    }

    fn entry_hits(&self, family: &Family) -> [u64; 3] {
        [
            self.hits(Family::host(family.blocked)),
            self.hits(parse_entry(family.cidr).unwrap()),
            self.hits(Family::host(family.allowed)),
        ]
    }

    /// The counter deltas since `before`, once the program has seen at least `expected` frames
    /// more (bounded wait), plus a little longer so that a surplus would show too.
    fn delta_after(&self, before: &Counters, expected: u64) -> Counters {
        let deadline = Instant::now() + SHOULD_HAPPEN;
        while self.counters().since(before).total().packets < expected && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        self.counters().since(before)
    }

    /// A UDP receiver on the target, port `port`.
    fn udp_receiver(&self, family: &Family, port: u16) -> UdpSocket {
        let socket = self
            .target
            .run(|| UdpSocket::bind(SocketAddr::new(family.target, port)))
            .unwrap();
        socket.set_read_timeout(Some(SHOULD_NOT)).unwrap();
        socket
    }

    /// Sends `count` datagrams of `UDP_PAYLOAD` bytes from each of `sources` (in order) to the
    /// target's `port`.
    fn send_udp(&self, sources: &[IpAddr], family: &Family, port: u16, count: u64) {
        let to = SocketAddr::new(family.target, port);
        self.peer.run(|| {
            for &source in sources {
                let socket = UdpSocket::bind(SocketAddr::new(source, 0)).unwrap();
                for i in 0..count {
                    let mut payload = [0u8; UDP_PAYLOAD];
                    payload[..8].copy_from_slice(&i.to_be_bytes());
                    socket.send_to(&payload, to).unwrap();
                }
            }
        });
    }
}

/// Receives datagrams on `socket` and counts them per source (in the order of `sources`):
/// until `expected` have arrived (bounded by `SHOULD_HAPPEN`), then until the socket has been
/// silent for `SHOULD_NOT`, so that anything that should not have come would be counted too.
fn receive_udp(socket: &UdpSocket, sources: &[IpAddr], expected: u64) -> Vec<u64> {
    let mut counts = vec![0u64; sources.len()];
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SHOULD_HAPPEN;
    // Bounded in count too, generously: no test sends more than N per source.
    for _ in 0..(4 * N * sources.len() as u64) {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                assert_eq!(len, UDP_PAYLOAD, "datagram from {from} has the size sent");
                let index = sources
                    .iter()
                    .position(|&s| s == from.ip())
                    .unwrap_or_else(|| panic!("a datagram from {from}, which sent none"));
                counts[index] += 1;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if counts.iter().sum::<u64>() >= expected || Instant::now() >= deadline {
                    break;
                }
            }
            // A receive with a timeout is not restarted after the process was stopped or
            // frozen (SIGSTOP/SIGCONT, cgroup freezer): EINTR without any signal handler.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("receiving: {e}"),
        }
    }
    counts
}

fn c(packets: u64, bytes: u64) -> Counter {
    Counter { packets, bytes }
}

/// Asserts every reason not in `expected` stayed at zero, and those in it moved exactly.
fn assert_exact(delta: &Counters, expected: &[(Reason, Counter)], what: &str) {
    for (reason, got) in delta.iter() {
        let want = expected
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        assert_eq!(
            got, want,
            "{what}: {reason:?} moved by {got:?}, expected {want:?} (all deltas: {delta:?})"
        );
    }
}

fn udp(family: Family, tag: &str) {
    let lab = Lab::new(tag);
    let sources = family.sources();
    let receiver = lab.udp_receiver(&family, 9000);
    let hits_before = lab.entry_hits(&family);
    let before = lab.counters();

    lab.send_udp(&sources, &family, 9000, N);
    let received = receive_udp(&receiver, &sources, N);
    let delta = lab.delta_after(&before, 3 * N);

    assert_eq!(
        received,
        [0, 0, N],
        "datagrams received from blocked, prefix-blocked, allowed"
    );
    let frame = ETH_HLEN + family.ip_hlen + 8 + UDP_PAYLOAD as u64;
    assert_exact(
        &delta,
        &[
            (Reason::BlockedExact, c(N, N * frame)),
            (Reason::BlockedCidr, c(N, N * frame)),
            (Reason::Allowlisted, c(N, N * frame)),
        ],
        "UDP",
    );
    let hits = lab.entry_hits(&family);
    assert_eq!(
        [
            hits[0] - hits_before[0],
            hits[1] - hits_before[1],
            hits[2] - hits_before[2]
        ],
        [N, N, N],
        "per-entry hits of the exact block, the prefix block and the allow entry"
    );
}

#[test]
fn udp_v4_blocked_sources_are_dropped_and_counted_exactly() {
    udp(Family::v4(), "u4");
}

#[test]
fn udp_v6_blocked_sources_are_dropped_and_counted_exactly() {
    udp(Family::v6(), "u6");
}

/// An ICMP or ICMPv6 echo request (header with its checksum, then payload), as a raw socket
/// sends it. (For ICMPv6 the kernel recomputes the checksum anyway: raw ICMPv6 sockets always do.)
fn echo_request(family: &Family, source: IpAddr, id: u16, seq: u16) -> Vec<u8> {
    let payload = [0x5a; ICMP_PAYLOAD];
    let echo = IcmpEchoHeader { id, seq };
    let mut out = match (source, family.target) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &payload)
                .to_bytes()
                .to_vec()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => Icmpv6Header::with_checksum(
            Icmpv6Type::EchoRequest(echo),
            s.octets(),
            d.octets(),
            &payload,
        )
        .unwrap()
        .to_bytes()
        .to_vec(),
        _ => unreachable!("one family"),
    };
    out.extend_from_slice(&payload);
    out
}

/// A raw ICMP socket in the peer bound to `source`: it sends echo requests from `source` and
/// sees only what is addressed to `source`.
fn icmp_socket(lab: &Lab, source: IpAddr) -> Socket {
    lab.peer
        .run(|| {
            let (domain, protocol) = match source {
                IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
                IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
            };
            let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
            socket.set_read_timeout(Some(SHOULD_NOT))?;
            std::io::Result::Ok(socket)
        })
        .unwrap()
}

/// Counts echo replies with identifier `id` from the target on `socket`: until `expected` have
/// arrived (bounded by `SHOULD_HAPPEN`), then until the socket has been silent for `SHOULD_NOT`.
fn count_echo_replies(socket: &Socket, family: &Family, id: u16, expected: u64) -> u64 {
    let reply_type = if family.target.is_ipv4() { 0 } else { 129 };
    let mut replies = 0;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SHOULD_HAPPEN;
    // Bounded in count too, generously: M requests were sent from this source.
    for _ in 0..(4 * M) {
        let len = match (&*socket).read(&mut buf) {
            Ok(len) => len,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if replies >= expected || Instant::now() >= deadline {
                    break;
                }
                continue;
            }
            // As for UDP: a timed receive is not restarted after a stop or freeze.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("receiving ICMP: {e}"),
        };
        // Raw IPv4 sockets deliver the IP header too; raw IPv6 sockets do not.
        let icmp = match family.target {
            IpAddr::V4(target) => {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if len < ihl + 8 || buf[12..16] != target.octets() {
                    continue;
                }
                &buf[ihl..len]
            }
            IpAddr::V6(_) => &buf[..len],
        };
        if icmp.len() >= 8 && icmp[0] == reply_type && u16::from_be_bytes([icmp[4], icmp[5]]) == id
        {
            replies += 1;
        }
    }
    replies
}

fn icmp(family: Family, tag: &str) {
    let lab = Lab::new(tag);
    let sources = family.sources();
    let sockets: Vec<Socket> = sources.iter().map(|&s| icmp_socket(&lab, s)).collect();
    let hits_before = lab.entry_hits(&family);
    let before = lab.counters();

    let to = SockAddr::from(SocketAddr::new(family.target, 0));
    for (index, (socket, &source)) in sockets.iter().zip(&sources).enumerate() {
        let id = 0x6700 + index as u16;
        for seq in 0..M as u16 {
            let request = echo_request(&family, source, id, seq);
            let sent = socket.send_to(&request, &to).unwrap();
            assert_eq!(sent, request.len());
        }
    }
    // The allowed source first: once its replies are in, the blocked sources' replies would
    // have been too, so for them a short silence is enough.
    let mut replies = [0u64; 3];
    for index in [2, 0, 1] {
        let expected = if index == 2 { M } else { 0 };
        let id = 0x6700 + index as u16;
        replies[index] = count_echo_replies(&sockets[index], &family, id, expected);
    }
    let delta = lab.delta_after(&before, 3 * M);

    assert_eq!(
        replies,
        [0, 0, M],
        "echo replies to the blocked, prefix-blocked, allowed source"
    );
    let frame = ETH_HLEN + family.ip_hlen + 8 + ICMP_PAYLOAD as u64;
    assert_exact(
        &delta,
        &[
            (Reason::BlockedExact, c(M, M * frame)),
            (Reason::BlockedCidr, c(M, M * frame)),
            (Reason::Allowlisted, c(M, M * frame)),
        ],
        "ICMP echo",
    );
    let hits = lab.entry_hits(&family);
    assert_eq!(
        [
            hits[0] - hits_before[0],
            hits[1] - hits_before[1],
            hits[2] - hits_before[2]
        ],
        [M, M, M],
        "per-entry hits of the exact block, the prefix block and the allow entry"
    );
}

#[test]
fn icmp_v4_echo_is_answered_only_for_the_allowed_source() {
    icmp(Family::v4(), "i4");
}

#[test]
fn icmp_v6_echo_is_answered_only_for_the_allowed_source() {
    icmp(Family::v6(), "i6");
}

/// Connects from `source` to the target's `port` within `timeout`, inside the peer.
fn tcp_connect(
    lab: &Lab,
    source: IpAddr,
    family: &Family,
    port: u16,
    timeout: Duration,
) -> std::io::Result<Socket> {
    lab.peer.run(|| {
        let to = SocketAddr::new(family.target, port);
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&to.into(), timeout)?;
        Ok(socket)
    })
}

/// Accepts (nonblocking listener) until one connection is in (bounded by `SHOULD_HAPPEN`),
/// then for `SHOULD_NOT` more, and returns every connection accepted.
fn accept_all(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut accepted = Vec::new();
    let start = Instant::now();
    let mut first_at = None;
    // Bounded in count too (a poll every 10 ms for at most SHOULD_HAPPEN + SHOULD_NOT).
    for _ in 0..600 {
        match listener.accept() {
            Ok(pair) => {
                first_at.get_or_insert_with(Instant::now);
                accepted.push(pair);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                let done = match first_at {
                    Some(at) => at.elapsed() >= SHOULD_NOT,
                    None => start.elapsed() >= SHOULD_HAPPEN,
                };
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accepting: {e}"),
        }
    }
    accepted
}

fn tcp(family: Family, tag: &str) {
    let lab = Lab::new(tag);
    let port = 7000;
    let listener = lab
        .target
        .run(|| TcpListener::bind(SocketAddr::new(family.target, port)))
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let hits_before = lab.entry_hits(&family);
    let before = lab.counters();

    for source in [family.blocked, family.in_cidr] {
        // Shorter than the first SYN retransmission (1 s): one SYN per attempt. A refusal
        // instead of a timeout would mean the SYN got through and the target answered.
        match tcp_connect(&lab, source, &family, port, SHOULD_NOT) {
            Ok(_) => panic!("{source} is blocked, yet it connected"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut, "connecting from {source}"),
        }
    }
    let client: TcpStream = tcp_connect(&lab, family.allowed, &family, port, SHOULD_HAPPEN)
        .unwrap_or_else(|e| panic!("connecting from the allowed {}: {e}", family.allowed))
        .into();
    client.set_read_timeout(Some(SHOULD_HAPPEN)).unwrap();

    let mut accepted = accept_all(&listener);
    let froms: Vec<IpAddr> = accepted.iter().map(|(_, from)| from.ip()).collect();
    assert_eq!(
        froms,
        [family.allowed],
        "the listener accepts the allowed source only"
    );

    // Echo a message over the connection, both ways through the shield's interface.
    let (server, _) = accepted.pop().unwrap();
    server.set_nonblocking(false).unwrap();
    server.set_read_timeout(Some(SHOULD_HAPPEN)).unwrap();
    let message = b"through the shield";
    let mut buf = [0u8; 18];
    (&client).write_all(message).unwrap();
    (&server).read_exact(&mut buf).unwrap();
    (&server).write_all(&buf).unwrap();
    let mut echoed = [0u8; 18];
    (&client).read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, message);

    let delta = lab.counters().since(&before);
    let hits = lab.entry_hits(&family);
    assert!(
        delta.get(Reason::BlockedExact).packets >= 1,
        "the SYN from the blocked source was dropped: {delta:?}"
    );
    assert!(
        delta.get(Reason::BlockedCidr).packets >= 1,
        "the SYN from the prefix-blocked source was dropped: {delta:?}"
    );
    // SYN, ACK, data and the ACK of the echo (delayed ACKs may merge the last two).
    assert!(
        delta.get(Reason::Allowlisted).packets >= 3,
        "the allowed connection went through the allowlist: {delta:?}"
    );
    assert_eq!(
        delta.get(Reason::NoMatch),
        Counter::default(),
        "every frame came from a listed source: {delta:?}"
    );
    for (i, what) in ["exact block", "prefix block", "allow entry"]
        .iter()
        .enumerate()
    {
        assert!(hits[i] > hits_before[i], "the {what} was hit");
    }
}

#[test]
fn tcp_v4_blocked_sources_never_connect() {
    tcp(Family::v4(), "t4");
}

#[test]
fn tcp_v6_blocked_sources_never_connect() {
    tcp(Family::v6(), "t6");
}

fn unblock(family: Family, tag: &str) {
    let mut lab = Lab::new(tag);
    let sources = family.sources();
    let receiver = lab.udp_receiver(&family, 9001);

    // Blocked to begin with, as the UDP test shows in detail.
    lab.send_udp(&[family.blocked], &family, 9001, 1);
    assert_eq!(receive_udp(&receiver, &sources, 0), [0, 0, 0]);

    assert!(lab.shield.unblock(Family::host(family.blocked)).unwrap());
    assert!(
        !lab.shield.unblock(Family::host(family.blocked)).unwrap(),
        "unblocking twice finds nothing the second time"
    );
    let hits_before = [
        lab.hits(parse_entry(family.cidr).unwrap()),
        lab.hits(Family::host(family.allowed)),
    ];
    let before = lab.counters();

    // The prefix-blocked source goes along to show that only the one entry was removed.
    lab.send_udp(&[family.blocked, family.in_cidr], &family, 9001, N);
    let received = receive_udp(&receiver, &sources, N);
    let delta = lab.delta_after(&before, 2 * N);

    assert_eq!(
        received,
        [N, 0, 0],
        "datagrams received from unblocked, prefix-blocked, allowed"
    );
    let frame = ETH_HLEN + family.ip_hlen + 8 + UDP_PAYLOAD as u64;
    assert_exact(
        &delta,
        &[
            (Reason::NoMatch, c(N, N * frame)),
            (Reason::BlockedCidr, c(N, N * frame)),
        ],
        "UDP after unblocking",
    );
    let hits_after = [
        lab.hits(parse_entry(family.cidr).unwrap()),
        lab.hits(Family::host(family.allowed)),
    ];
    assert_eq!(
        [
            hits_after[0] - hits_before[0],
            hits_after[1] - hits_before[1]
        ],
        [N, 0],
        "per-entry hits of the prefix block and the allow entry"
    );
    assert!(
        !lab.shield
            .blocked()
            .unwrap()
            .iter()
            .any(|e| e.net == Family::host(family.blocked)),
        "the entry is gone from the list"
    );
}

#[test]
fn unblocked_v4_source_gets_through_as_no_match() {
    unblock(Family::v4(), "n4");
}

#[test]
fn unblocked_v6_source_gets_through_as_no_match() {
    unblock(Family::v6(), "n6");
}

/// The namespaces currently listed by `ip netns list` (first word of each line).
fn listed_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn namespaces_are_removed_when_a_test_panics_midway() {
    common::require_root();
    let mut names = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let peer = Netns::create("e2e-pp").unwrap();
        let target = Netns::create("e2e-tp").unwrap();
        veth(&peer, "gze2e-ppp", &target, "gze2e-tpp").unwrap();
        names.push(peer.name().to_string());
        names.push(target.name().to_string());
        let listed = listed_namespaces();
        assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");
        panic!("deliberate failure midway through a test (expected in this test's output)");
    }));
    assert!(outcome.is_err(), "the closure panicked");
    assert_eq!(names.len(), 2);
    let listed = listed_namespaces();
    for name in &names {
        assert!(
            !listed.contains(name),
            "{name} outlived the panic: {listed:?}"
        );
    }
}

#[test]
fn a_tag_in_use_is_refused_not_taken_over() {
    common::require_root();
    let first = Netns::create("e2e-dup").unwrap();
    // Creating a namespace deletes a same-named leftover first; for a live one of this process
    // that would pull the floor from under a test running in parallel.
    let second = Netns::create("e2e-dup");
    assert!(
        matches!(second, Err(NetnsError::InUse { ref name }) if name == first.name()),
        "{second:?}"
    );
    assert!(listed_namespaces().iter().any(|n| n == first.name()));
    let name = first.name().to_string();
    drop(first);
    assert!(!listed_namespaces().contains(&name));
    // Once dropped, the tag is free again.
    let again = Netns::create("e2e-dup").unwrap();
    assert_eq!(again.name(), name);
}
