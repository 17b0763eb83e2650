//! Traffic generators for the lab: legitimate request/response clients that measure what they
//! get, and attacks (spoofed UDP request flood, TCP SYN flood, a trickle of malformed packets,
//! invalid application messages).
//!
//! Every generator runs on the calling thread, in the calling thread's network namespace (use
//! [`crate::netns::Netns::run`]), and is bounded three ways: a rate ([`Limits::pps`]), a count
//! ([`Limits::max_packets`]) and a duration ([`Limits::max_duration`]); each also stops when
//! the shared `stop` flag is set (Ctrl-C).

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    peer_protocol::{Request, Response, PORT},
    raw::{set_macs, RawSender},
};
use crate::craft::{self, RawIpv4, RawIpv6, L4};

/// The three bounds every generator has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Packets (or requests) per second.
    pub pps: u32,
    pub max_packets: u64,
    pub max_duration: Duration,
}

impl Limits {
    /// `pps` for `duration`, and no more than that many packets.
    pub fn for_duration(pps: u32, duration: Duration) -> Self {
        Self {
            pps,
            max_packets: (f64::from(pps) * duration.as_secs_f64()).ceil() as u64,
            max_duration: duration,
        }
    }
}

/// Why a generator stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Count,
    Time,
    Stopped,
}

/// Keeps a loop at `pps` by sleeping whenever it is ahead of schedule (sends come in bursts of
/// at most about a millisecond's worth), and ends it at the first bound reached.
struct Pacer<'a> {
    limits: Limits,
    started: Instant,
    done: u64,
    stop: &'a AtomicBool,
    /// Legitimate clients do not burst to catch up after a slow request; floods do.
    catch_up: bool,
    last: Instant,
}

impl<'a> Pacer<'a> {
    fn new(limits: Limits, stop: &'a AtomicBool, catch_up: bool) -> Self {
        let now = Instant::now();
        Self {
            limits,
            started: now,
            done: 0,
            stop,
            catch_up,
            last: now,
        }
    }

    /// Waits until the next packet is due; `Err` says why the loop must end.
    fn next(&mut self) -> Result<(), Ended> {
        if self.done >= self.limits.max_packets {
            return Err(Ended::Count);
        }
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.limits.pps.max(1)));
        let due = if self.catch_up {
            self.started + interval.mul_f64(self.done as f64)
        } else if self.done == 0 {
            self.started
        } else {
            self.last + interval
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Ended::Stopped);
            }
            let now = Instant::now();
            if now.duration_since(self.started) >= self.limits.max_duration {
                return Err(Ended::Time);
            }
            if now >= due {
                break;
            }
            let wait = due - now;
            if wait < Duration::from_micros(500) && self.catch_up {
                break; // bursts of up to half a millisecond: sleeping that little is inaccurate
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        self.done += 1;
        self.last = Instant::now();
        Ok(())
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What an attack generator did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenReport {
    /// `udp-flood`, `syn-flood`, `malformed`, `invalid-udp`, `invalid-tcp`.
    pub kind: &'static str,
    /// Where from (a host name or "N spoofed sources").
    pub from: String,
    pub sent: u64,
    /// Sends the kernel refused (a full queue, an unreachable route).
    pub errors: u64,
    pub elapsed: Duration,
    pub ended: Ended,
}

/// What a legitimate client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegitReport {
    pub src: Option<IpAddr>,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    pub requests: u64,
    pub answered: u64,
    /// Round-trip time of each answered request, from its first send (retries included).
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl LegitReport {
    /// Several clients' reports as one.
    pub fn merge<'a>(reports: impl IntoIterator<Item = &'a LegitReport>) -> LegitReport {
        let mut all = LegitReport::default();
        for r in reports {
            all.requests += r.requests;
            all.answered += r.answered;
            all.latencies.extend_from_slice(&r.latencies);
            all.elapsed = all.elapsed.max(r.elapsed);
        }
        all
    }

    /// Answered share of requests, 0.0 to 1.0 (1.0 when nothing was asked).
    pub fn success(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.answered as f64 / self.requests as f64
        }
    }

    /// The `q` quantile (0.0 to 1.0) of answered requests' latencies.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        sorted
            .get(((last as f64) * q.clamp(0.0, 1.0)).round() as usize)
            .copied()
    }
}

/// How a legitimate client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegitConfig {
    pub src: IpAddr,
    pub node: SocketAddr,
    /// `pps` is requests per second.
    pub limits: Limits,
    /// Wait this long for an answer before sending the request again (UDP).
    pub attempt_timeout: Duration,
    /// Sends per request, the first included (UDP); a request fails after the last one times
    /// out. Like a DNS resolver: loss is retried, lasting loss is failure.
    pub attempts: u32,
}

impl LegitConfig {
    pub fn new(src: IpAddr, node: IpAddr, limits: Limits) -> Self {
        Self {
            src,
            node: SocketAddr::new(node, PORT),
            limits,
            attempt_timeout: Duration::from_millis(100),
            attempts: 5,
        }
    }

    fn request(n: u64) -> Request {
        // Half cheap, half the node's real work.
        if n.is_multiple_of(2) {
            Request::Ping(n)
        } else {
            Request::Get(n)
        }
    }
}

/// Request/response over UDP from `cfg.src`, retrying lost requests; measures success and RTT.
pub fn legit_udp(cfg: &LegitConfig, stop: &AtomicBool) -> io::Result<LegitReport> {
    let socket = UdpSocket::bind(SocketAddr::new(cfg.src, 0))?;
    let mut report = LegitReport {
        src: Some(cfg.src),
        transport: "udp",
        ..Default::default()
    };
    let mut pacer = Pacer::new(cfg.limits, stop, false);
    let mut buf = [0u8; 256];
    while pacer.next().is_ok() {
        let request = LegitConfig::request(report.requests);
        report.requests += 1;
        let wire = request.encode();
        let first = Instant::now();
        'attempts: for _ in 0..cfg.attempts.max(1) {
            if socket.send_to(wire.as_bytes(), cfg.node).is_err() {
                std::thread::sleep(cfg.attempt_timeout);
                continue;
            }
            let deadline = Instant::now() + cfg.attempt_timeout;
            // Answers to earlier attempts of earlier requests may still arrive: skip them.
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                socket.set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        if Response::parse(&buf[..n]).is_some_and(|r| request.is_answered_by(&r)) {
                            report.answered += 1;
                            report.latencies.push(first.elapsed());
                            break 'attempts;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(_) => break,
                }
            }
        }
    }
    report.elapsed = pacer.elapsed();
    Ok(report)
}

/// Request/response over one TCP connection from `cfg.src` (reconnecting after a failure). A
/// request fails if its answer takes longer than `attempts × attempt_timeout`.
pub fn legit_tcp(cfg: &LegitConfig, stop: &AtomicBool) -> io::Result<LegitReport> {
    let mut report = LegitReport {
        src: Some(cfg.src),
        transport: "tcp",
        ..Default::default()
    };
    let patience = cfg.attempt_timeout * cfg.attempts.max(1);
    let mut pacer = Pacer::new(cfg.limits, stop, false);
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut line = String::new();
    while pacer.next().is_ok() {
        let request = LegitConfig::request(report.requests);
        report.requests += 1;
        let first = Instant::now();
        if conn.is_none() {
            conn = connect_from(cfg.src, cfg.node, patience)
                .ok()
                .and_then(|s| Some((s.try_clone().ok()?, BufReader::new(s))));
        }
        let Some((writer, reader)) = conn.as_mut() else {
            continue;
        };
        line.clear();
        let ok = writer
            .write_all(format!("{}\n", request.encode()).as_bytes())
            .and_then(|()| reader.get_ref().set_read_timeout(Some(patience)))
            .and_then(|()| reader.read_line(&mut line))
            .is_ok_and(|n| n > 0)
            && Response::parse(line.as_bytes()).is_some_and(|r| request.is_answered_by(&r));
        if ok {
            report.answered += 1;
            report.latencies.push(first.elapsed());
        } else {
            conn = None; // a late answer would confuse the next request: start afresh
        }
    }
    report.elapsed = pacer.elapsed();
    Ok(report)
}

fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&dst.into(), timeout)?;
    socket.set_nodelay(true)?;
    Ok(socket.into())
}

/// `count` IPv4 sources from 198.19.`block`.0 upwards and `count_v6` IPv6 sources in
/// 2001:2:66:`block`::/64: spoofed, never anyone's real address. A phase can use its own `block`
/// so that bans from an earlier phase do not carry over.
pub fn spoofed_sources(count_v4: u16, count_v6: u16, block: u8) -> Vec<IpAddr> {
    let v4 = (0..count_v4).map(|i| {
        let third = block.wrapping_add((i / 254) as u8);
        IpAddr::from(Ipv4Addr::new(198, 19, third, (i % 254) as u8 + 1))
    });
    let v6 = (0..count_v6)
        .map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 2, 0x66, block.into(), 0, 0, 0, i + 1)));
    v4.chain(v6).collect()
}

/// Where raw frames go: out of `iface`, from `src_mac` to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTarget {
    pub iface: String,
    pub src_mac: [u8; 6],
    pub node_mac: [u8; 6],
    pub node_v4: Ipv4Addr,
    pub node_v6: Ipv6Addr,
}

impl RawTarget {
    fn node_like(&self, src: IpAddr) -> IpAddr {
        match src {
            IpAddr::V4(_) => self.node_v4.into(),
            IpAddr::V6(_) => self.node_v6.into(),
        }
    }
}

fn blast(
    kind: &'static str,
    from: String,
    target: &RawTarget,
    frames: &[Vec<u8>],
    limits: Limits,
    stop: &AtomicBool,
) -> io::Result<GenReport> {
    let sender = RawSender::open(&target.iface)?;
    let mut pacer = Pacer::new(limits, stop, true);
    let (mut sent, mut errors) = (0u64, 0u64);
    let ended = loop {
        if let Err(ended) = pacer.next() {
            break ended;
        }
        match sender.send(&frames[(sent + errors) as usize % frames.len()]) {
            Ok(()) => sent += 1,
            Err(_) => errors += 1,
        }
    };
    Ok(GenReport {
        kind,
        from,
        sent,
        errors,
        elapsed: pacer.elapsed(),
        ended,
    })
}

/// Valid-looking `GET` requests (the node's expensive request) to the node's UDP port, from
/// spoofed `sources` in turn: a request flood no handshake can filter.
pub fn udp_flood(
    target: &RawTarget,
    sources: &[IpAddr],
    limits: Limits,
    stop: &AtomicBool,
) -> io::Result<GenReport> {
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .enumerate()
        .map(|(i, &src)| {
            let payload = Request::Get(1_000_000 + i as u64).encode();
            let l4 = L4::Udp {
                src_port: 20000 + (i % 40000) as u16,
                dst_port: PORT,
            };
            let mut frame = craft::ip_packet(src, target.node_like(src), l4, payload.as_bytes());
            set_macs(&mut frame, target.node_mac, target.src_mac);
            frame
        })
        .collect();
    blast(
        "udp-flood",
        format!("{} spoofed sources", sources.len()),
        target,
        &frames,
        limits,
        stop,
    )
}

/// TCP SYNs to the node's port from spoofed `sources` (the node's answers go nowhere, so each
/// SYN leaves a half-open connection, or costs a SYN cookie).
pub fn syn_flood(
    target: &RawTarget,
    sources: &[IpAddr],
    limits: Limits,
    stop: &AtomicBool,
) -> io::Result<GenReport> {
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, &src)| {
            // A few ports per source, so the SYNs are not retransmissions of one another.
            (0..4u16).map(move |k| (i, src, k))
        })
        .map(|(i, src, k)| {
            let l4 = L4::TcpSyn {
                src_port: 30000 + ((i as u16).wrapping_mul(4) + k) % 30000,
                dst_port: PORT,
            };
            let mut frame = craft::ip_packet(src, target.node_like(src), l4, &[]);
            set_macs(&mut frame, target.node_mac, target.src_mac);
            frame
        })
        .collect();
    blast(
        "syn-flood",
        format!("{} spoofed sources", sources.len()),
        target,
        &frames,
        limits,
        stop,
    )
}

/// Broken packets from `src`: truncated and inconsistent IPv4/IPv6 and UDP headers. The XDP
/// program counts the broken IP headers as `malformed` (and passes them); the kernel discards
/// all of them.
pub fn malformed_frames(src_v4: Ipv4Addr, src_v6: Ipv6Addr, target: &RawTarget) -> Vec<Vec<u8>> {
    let v4 = |f: &dyn Fn(&mut RawIpv4)| {
        let mut h = RawIpv4::new(src_v4);
        h.dst = target.node_v4.octets();
        h.payload = b"\x1f\x40\x1b\x58\x00\x0cGET 1".to_vec();
        f(&mut h);
        h.frame()
    };
    let mut frames = vec![
        v4(&|h| h.ihl = 4),                   // header length below the minimum
        v4(&|h| h.version = 5),               // not IPv4 at all
        v4(&|h| h.total_len = Some(1400)),    // claims more than the frame holds
        v4(&|h| h.payload.truncate(4)),       // UDP header cut short
        v4(&|h| h.ihl = 15),                  // options that are not there
        craft::raw_frame(0x0800, &[0x45, 0]), // IPv4 header cut short
    ];
    let mut v6 = RawIpv6::new(src_v6);
    v6.dst = target.node_v6.octets();
    v6.payload = vec![0x1f, 0x40];
    frames.push(v6.frame()); // UDP header cut short
    v6.version = 4;
    frames.push(v6.frame()); // wrong version for the ethertype
    frames.push(craft::raw_frame(0x86dd, &[0x60, 0, 0])); // IPv6 header cut short
    for frame in &mut frames {
        set_macs(frame, target.node_mac, target.src_mac);
    }
    frames
}

/// A slow trickle of [`malformed_frames`].
pub fn malformed_trickle(
    target: &RawTarget,
    src_v4: Ipv4Addr,
    src_v6: Ipv6Addr,
    limits: Limits,
    stop: &AtomicBool,
) -> io::Result<GenReport> {
    let frames = malformed_frames(src_v4, src_v6, target);
    blast(
        "malformed",
        format!("{src_v4}, {src_v6}"),
        target,
        &frames,
        limits,
        stop,
    )
}

/// Messages that are not the protocol, from `src`'s real address over UDP and, if `tcp`, over
/// one TCP connection too: what a buggy or hostile peer sends.
pub fn invalid_messages(
    src: IpAddr,
    node: IpAddr,
    tcp: bool,
    limits: Limits,
    stop: &AtomicBool,
) -> io::Result<GenReport> {
    const GARBAGE: [&[u8]; 4] = [b"HELLO 1", b"GET -1", b"\x00\x01\x02\xff", b"PING"];
    let node = SocketAddr::new(node, PORT);
    let udp = UdpSocket::bind(SocketAddr::new(src, 0))?;
    let mut stream = if tcp {
        connect_from(src, node, Duration::from_secs(1)).ok()
    } else {
        None
    };
    let mut pacer = Pacer::new(limits, stop, true);
    let (mut sent, mut errors) = (0u64, 0u64);
    let ended = loop {
        if let Err(ended) = pacer.next() {
            break ended;
        }
        let message = GARBAGE[(sent + errors) as usize % GARBAGE.len()];
        let result = match stream.as_mut() {
            // Every other message on TCP, while the node keeps the connection.
            Some(s) if !(sent + errors).is_multiple_of(2) => {
                let r = s.write_all(message).and_then(|()| s.write_all(b"\n"));
                if r.is_err() {
                    stream = None;
                }
                r
            }
            _ => udp.send_to(message, node).map(|_| ()),
        };
        match result {
            Ok(()) => sent += 1,
            Err(_) => errors += 1,
        }
    };
    Ok(GenReport {
        kind: if tcp {
            "invalid-udp+tcp"
        } else {
            "invalid-udp"
        },
        from: src.to_string(),
        sent,
        errors,
        elapsed: pacer.elapsed(),
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_stops_at_the_first_bound() {
        let stop = AtomicBool::new(false);
        let limits = Limits {
            pps: 100_000,
            max_packets: 50,
            max_duration: Duration::from_secs(5),
        };
        let mut p = Pacer::new(limits, &stop, true);
        let mut n = 0;
        let ended = loop {
            match p.next() {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!((n, ended), (50, Ended::Count));

        let limits = Limits {
            pps: 1000,
            max_packets: 1_000_000,
            max_duration: Duration::from_millis(100),
        };
        let mut p = Pacer::new(limits, &stop, true);
        let mut n = 0;
        while p.next().is_ok() {
            n += 1;
        }
        // Catching up, the pacer sends what is due and no more: never over 100 (+1 for the
        // half-millisecond burst allowance). The lower bound is loose, since a stall of this
        // thread near the end (a loaded CI machine) leaves packets undue at the deadline.
        assert!((10..=101).contains(&n), "{n} packets in 100 ms at 1000 pps");
    }

    #[test]
    fn spoofed_sources_stay_in_their_ranges() {
        let s = spoofed_sources(300, 3, 2);
        assert_eq!(s.len(), 303);
        assert_eq!(s[0], "198.19.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[254], "198.19.3.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[302], "2001:2:66:2::3".parse::<IpAddr>().unwrap());
        let v4: ipnet::IpNet = super::super::topology::SPOOF_V4.parse().unwrap();
        let v6: ipnet::IpNet = super::super::topology::SPOOF_V6.parse().unwrap();
        assert!(s.iter().all(|a| v4.contains(a) || v6.contains(a)));
    }

    #[test]
    fn latency_quantiles() {
        let r = LegitReport {
            requests: 4,
            answered: 3,
            latencies: [3, 1, 2].map(Duration::from_millis).to_vec(),
            ..Default::default()
        };
        assert_eq!(r.latency(0.5), Some(Duration::from_millis(2)));
        assert_eq!(r.latency(1.0), Some(Duration::from_millis(3)));
        assert!((r.success() - 0.75).abs() < 1e-9);
    }
}

#[cfg(test)]
mod malformed_frame_tests {
    use super::*;

    #[test]
    fn broken_ip_headers_are_malformed_to_the_program() {
        let target = RawTarget {
            iface: "x".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            node_mac: [2, 0, 0, 0, 0, 2],
            node_v4: Ipv4Addr::new(198, 18, 0, 1),
            node_v6: "2001:2::1".parse().unwrap(),
        };
        let model = groundzero::model::ModelLists::new();
        let verdicts: Vec<_> = malformed_frames(
            Ipv4Addr::new(198, 18, 0, 62),
            "2001:2::62".parse().unwrap(),
            &target,
        )
        .iter()
        .map(|f| model.verdict(f, false))
        .collect();
        use groundzero_common::Reason::{Malformed as M, NoMatch as N};
        // Broken IP headers are the program's to count; a length that lies or a cut-short UDP
        // header pass on (the program reads no further than the source address and the IP
        // header), and the kernel discards them.
        assert_eq!(verdicts, [M, M, N, N, M, M, N, M, M]);
    }
}
