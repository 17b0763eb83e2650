//! Journey tracing in the kernel: real UDP and TCP through a veth pair into sockets an
//! application reads, from an allowed and a blocked source; plus a packet the kernel drops
//! itself (no listener). Addresses are from 198.18.0.0/15 and 2001:2::/48 only; every loop is
//! bounded in count and time.
mod common;

use common::topology::{Topology, BAD, FLOOD, GOOD, NODE};

use common::daemon::TestDaemon;
use groundzero_api::client::ClientError;
use hyper::Method;
use serde_json::{json, Value};

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use groundzero::{
    journey::{Assembler, FlowFilter, Journey, JourneyStats, Kallsyms, KernelInfo, Outcome},
    AttachMode, IpNet, Shield,
};

const N: usize = 20;

struct Lab {
    shield: Shield,
    topo: Topology,
    kernel: KernelInfo,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let mut shield = common::shield();
        let topo = Topology::new(tag);
        for bad in BAD {
            shield
                .block(IpNet::from(bad.parse::<IpAddr>().unwrap()))
                .unwrap();
        }
        topo.node
            .run(|| shield.attach(&topo.node_if, AttachMode::Native))
            .unwrap();
        let kernel = KernelInfo::from_running_kernel().unwrap();
        Lab {
            shield,
            topo,
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
        let server = lab.topo.node.run(|| UdpSocket::bind(node_addr)).unwrap();
        lab.topo.peer.run(|| {
            for src in [GOOD[i], BAD[i]] {
                let s = UdpSocket::bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
                for n in 0..N {
                    s.send_to(format!("ping {n}").as_bytes(), node_addr)
                        .unwrap();
                }
            }
        });
        let got = common::recv_expected(&server, N);
        assert_eq!(got, N, "only the allowed source's datagrams arrive");
    }
    let journeys = collect(&mut events, &mut asm, |j| j.len() >= 4 * N);
    let mut by: HashMap<(String, Outcome), usize> = HashMap::new();
    for j in &journeys {
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
    eprintln!("{by:?} counts={:?}", asm.counts);
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

    // TCP: a connection from the allowed source; its data segments are read by the server.
    let node_addr = SocketAddr::new(NODE[0].parse().unwrap(), 7001);
    let listener = lab.topo.node.run(|| TcpListener::bind(node_addr)).unwrap();
    let client = lab.topo.peer.run(|| {
        let local = SocketAddr::new(GOOD[0].parse().unwrap(), 0);
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect_timeout(&node_addr.into(), Duration::from_secs(2))
            .unwrap();
        let mut stream: TcpStream = sock.into();
        for k in 0..5 {
            stream.write_all(format!("msg {k}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        stream
    });
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < 30 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(got.len(), 30, "five 6-byte messages arrive");
    drop(client);
    // Datagrams to a port nobody listens on: the kernel drops them and says why.
    lab.topo
        .send(GOOD[0], SocketAddr::new(NODE[0].parse().unwrap(), 7999), 3);

    let journeys = collect(&mut events, &mut asm, |js| {
        js.iter()
            .filter(|j| j.outcome == Outcome::KernelDrop && j.dst_port == 7999)
            .count()
            >= 3
            && js
                .iter()
                .any(|j| j.protocol == 6 && j.outcome == Outcome::Delivered)
    });
    let tcp_read: Vec<_> = journeys
        .iter()
        .filter(|j| j.protocol == 6 && j.outcome == Outcome::Delivered)
        .collect();
    assert!(
        !tcp_read.is_empty(),
        "a TCP data segment reaches the application: {journeys:?}"
    );
    for j in &tcp_read {
        let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
        assert_eq!(stages.first(), Some(&"xdp"));
        assert_eq!(stages.last(), Some(&"app"));
        assert!(
            stages.contains(&"stack") && stages.contains(&"transport"),
            "{stages:?}"
        );
        assert!(j.hops.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{j:?}");
    }
    let no_socket: Vec<_> = journeys
        .iter()
        .filter(|j| j.outcome == Outcome::KernelDrop && j.dst_port == 7999)
        .collect();
    assert_eq!(no_socket.len(), 3, "{journeys:?}");
    for j in no_socket {
        assert_eq!(lab.kernel.drop_reason(j.drop_reason.unwrap()), "NO_SOCKET");
        let last = j.hops.last().unwrap();
        assert_eq!(last.stage, "kernel_drop");
        assert!(
            last.label.contains("udp"),
            "the drop names the UDP receive path: {last:?}"
        );
    }
    lab.shield.stop_journey().unwrap();
}

/// Sampling 1 in N takes every N-th admitted packet, and the flow filter keeps the rest out.
#[test]
fn sampling_rate_and_filter() {
    let mut lab = Lab::new("b");
    let mut events = lab.shield.journey_events().unwrap();
    let filter = groundzero::journey::parse_filter("udp port 7002").unwrap();
    lab.shield.start_journey(&lab.kernel, 10, filter).unwrap();
    let mut asm = Assembler::new(2_000_000_000);
    let dst = SocketAddr::new(NODE[0].parse().unwrap(), 7002);
    let other = SocketAddr::new(NODE[0].parse().unwrap(), 7003);
    let server = lab.topo.node.run(|| UdpSocket::bind(dst)).unwrap();
    lab.topo.send(GOOD[0], other, 200); // filtered out: never sampled
    lab.topo.send(GOOD[0], dst, 200);
    let mut journeys = collect(&mut events, &mut asm, |j| j.len() >= 20);
    std::thread::sleep(Duration::from_millis(200));
    events.drain(|ev| journeys.extend(asm.feed(ev)));
    journeys.extend(asm.expire(u64::MAX));
    // The 1-in-N counter is per CPU (no shared atomics on the packet path): when the packets
    // are spread over CPUs, each CPU's remainder below 10 is not sampled.
    assert!(
        (19..=20).contains(&journeys.len()),
        "1 in 10 of the 200 admitted packets, got {}",
        journeys.len()
    );
    assert!(journeys.iter().all(|j| j.dst_port == 7002));
    drop(server);
    lab.shield.stop_journey().unwrap();
}

/// The daemon: tracing from its config, journeys through the API with the entry that dropped
/// them, and a source over the rate limit banned with a TTL.
#[test]
fn daemon_serves_journeys_and_bans_sources_over_the_rate() {
    let topo = Topology::new("c");
    let config = format!(
        "interfaces = [\"{}\"]\n[journey]\nenabled = true\nsample_every = 1\n\
         [ratelimit]\nrate = 200\nburst = 100\nban_ttl = \"2m\"\n\
         [metrics]\nlisten = \"127.0.0.1:9477\"\n",
        topo.node_if
    );
    let daemon = TestDaemon::start_in(&topo.node, &config);
    daemon.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [BAD[0]], "reason": "scanner"})),
    );
    let dst = SocketAddr::new(NODE[0].parse().unwrap(), 7000);
    let server = topo.node.run(|| UdpSocket::bind(dst)).unwrap();
    topo.send(GOOD[0], dst, 10);
    topo.send(BAD[0], dst, 10);
    assert_eq!(common::recv_expected(&server, 10), 10);

    // Journeys are assembled by the daemon's loop; wait for them to show.
    let deadline = Instant::now() + Duration::from_secs(5);
    let summary = loop {
        let s = daemon.ok(Method::GET, "/v1/journey", None);
        let delivered = s["outcomes"]["delivered"].as_u64().unwrap_or(0);
        let dropped = s["outcomes"]["xdp_drop"].as_u64().unwrap_or(0);
        if (delivered >= 10 && dropped >= 10) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(summary["tracing"]["enabled"], true, "{summary}");
    assert_eq!(summary["tracing"]["sample_every"], 1);
    assert!(
        summary["outcomes"]["delivered"].as_u64().unwrap() >= 10,
        "{summary}"
    );
    assert!(
        summary["outcomes"]["xdp_drop"].as_u64().unwrap() >= 10,
        "{summary}"
    );
    let stages: Vec<&str> = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for want in ["xdp", "stack", "socket", "app"] {
        assert!(stages.contains(&want), "{stages:?}");
    }
    // What this costs the host, from the kernel's run-time stats over the daemon's last second:
    // needs a window in which packets ran, so keep a trickle going while asking.
    let deadline = Instant::now() + Duration::from_secs(8);
    let cost = loop {
        topo.send(GOOD[0], dst, 5);
        let c = daemon.ok(Method::GET, "/v1/journey", None)["cost"].clone();
        let measured = c["xdp_ns_per_packet"].as_f64().is_some()
            && c["observers_cpu_ms_per_s"].as_f64().unwrap_or(0.0) > 0.0;
        if measured || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let xdp_ns = cost["xdp_ns_per_packet"].as_f64();
    assert!(
        xdp_ns.is_some_and(|ns| ns > 0.0 && ns < 1_000_000.0),
        "{cost}"
    );
    assert!(
        cost["observers_runs_per_s"].as_f64().unwrap_or(0.0) > 0.0
            && cost["observers_ns_per_run"]
                .as_f64()
                .is_some_and(|ns| ns > 0.0),
        "{cost}"
    );
    let drops = daemon.ok(
        Method::GET,
        "/v1/journey/recent?outcome=xdp_drop&limit=5",
        None,
    );
    let first = &drops["journeys"][0];
    assert_eq!(first["verdict"], "drop", "{first}");
    assert_eq!(first["entry"]["entry"], format!("{}/32", BAD[0]), "{first}");
    assert_eq!(first["entry"]["reason"], "scanner", "{first}");
    assert_eq!(first["interface"], topo.node_if.as_str());
    let delivered = daemon.ok(
        Method::GET,
        "/v1/journey/recent?outcome=delivered&limit=1",
        None,
    );
    let hops = delivered["journeys"][0]["hops"].as_array().unwrap().clone();
    assert_eq!(hops.last().unwrap()["stage"], "app", "{delivered}");
    match daemon.call(Method::GET, "/v1/journey/recent?outcome=lost", None) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.contains("unknown outcome `lost`"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Prometheus gets per-stage latency histograms (the listener is in the node's namespace).
    let metrics = topo.node.run(|| {
        let mut c = TcpStream::connect("127.0.0.1:9477").unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text
    });
    assert!(
        metrics.contains("# TYPE groundzero_journey_stage_seconds histogram"),
        "{metrics}"
    );
    for stage in ["xdp", "stack", "app"] {
        assert!(
            metrics.contains(&format!(
                "groundzero_journey_stage_seconds_count{{stage=\"{stage}\"}}"
            )),
            "{stage}: {metrics}"
        );
    }

    // A source sending far over 200 pps is dropped by its bucket and banned by the daemon.
    topo.send(FLOOD[0], dst, 2000);
    let deadline = Instant::now() + Duration::from_secs(5);
    let banned = loop {
        let entries = daemon.ok(Method::GET, "/v1/entries?source=auto-ban", None);
        let hit = entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["entry"] == format!("{}/32", FLOOD[0]))
            .cloned();
        if hit.is_some() || Instant::now() > deadline {
            break hit;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let banned = banned.expect("the flooding source is banned within 5 s");
    let holder = &banned["holders"][0];
    assert!(
        holder["reason"]
            .as_str()
            .unwrap()
            .starts_with("over 200 pps"),
        "{banned}"
    );
    let ttl = holder["expires"].as_u64().unwrap() - holder["created"].as_u64().unwrap();
    assert_eq!(ttl, 120, "{banned}");
    let stats: Value = daemon.ok(Method::GET, "/v1/stats", None);
    assert!(stats.to_string().contains("rate_limited"), "{stats}");

    // Tracing can be switched off and on at runtime; bad requests say what is wrong.
    let off = daemon.ok(Method::PUT, "/v1/journey", Some(json!({"enabled": false})));
    assert_eq!(off["tracing"]["enabled"], false);
    match daemon.call(
        Method::PUT,
        "/v1/journey",
        Some(json!({"enabled": true, "filter": "udp port x"})),
    ) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.contains("`x` is not a port"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let on = daemon.ok(
        Method::PUT,
        "/v1/journey",
        Some(json!({"enabled": true, "sample_every": 8, "filter": "udp"})),
    );
    assert_eq!(on["tracing"]["sample_every"], 8);
    assert_eq!(on["tracing"]["filter"], "udp");
    drop(daemon);
}
