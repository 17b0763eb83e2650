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
        Lab::with_mode(tag, AttachMode::Native)
    }

    fn with_mode(tag: &str, mode: AttachMode) -> Lab {
        let mut shield = common::shield();
        let topo = Topology::new(tag);
        for bad in BAD {
            shield
                .block(IpNet::from(bad.parse::<IpAddr>().unwrap()))
                .unwrap();
        }
        topo.node
            .run(|| shield.attach(&topo.node_if, mode))
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
            ["ip", "transport", "merged"].contains(&m.stage) && !m.why.is_empty(),
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
    // The kernel's own mean stands beside the sampled span.
    let verdict = daemon.ok(Method::GET, "/v1/journey", None)["verdict"].clone();
    assert!(verdict["kernel_mean_ns"].as_f64().is_some(), "{verdict}");
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
    assert_eq!(first["entry"]["resolved"], "kernel_key", "{first}");
    assert!(first["entry"]["resolved_unix_ms"].as_u64().unwrap() > 0);
    assert!(first["hops"][0]["cpu"].is_u64(), "{first}");
    assert_eq!(first["interface"], topo.node_if.as_str());
    // The evidence was recorded when the drop was drained: unblocking later does not erase it.
    daemon.ok(
        Method::POST,
        "/v1/unblock",
        Some(json!({"entries": [BAD[0]]})),
    );
    let again = daemon.ok(
        Method::GET,
        "/v1/journey/recent?outcome=xdp_drop&limit=1",
        None,
    );
    assert_eq!(again["journeys"][0]["entry"], first["entry"], "{again}");
    // A prefix: the kernel cannot say which LPM entry matched; the daemon looked it up as the
    // drop event arrived.
    let net = "2001:2:7::4/126";
    daemon.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [net], "reason": "a range"})),
    );
    let dst6 = SocketAddr::new(NODE[1].parse().unwrap(), 7000);
    topo.send(FLOOD[1], dst6, 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    let by_prefix = loop {
        let r = daemon.ok(
            Method::GET,
            "/v1/journey/recent?outcome=xdp_drop&limit=50",
            None,
        );
        let hit = r["journeys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["src"].as_str().unwrap_or("").contains(FLOOD[1]))
            .cloned();
        if hit.is_some() || Instant::now() > deadline {
            break hit;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let by_prefix = by_prefix.expect("the prefix drop is a journey");
    assert_eq!(by_prefix["entry"]["entry"], net, "{by_prefix}");
    assert_eq!(by_prefix["entry"]["resolved"], "at_drain", "{by_prefix}");
    assert_eq!(by_prefix["entry"]["reason"], "a range", "{by_prefix}");
    assert_eq!(by_prefix["reason"], "blocked_cidr", "{by_prefix}");

    // Every figure has a measurement behind it: the verdict's sampled span beside the kernel's
    // mean, NIC → XDP said to be unobservable, each stage of the path either measured or "not
    // observed" with a reason, and rates labelled, shares never above 1.
    let s = daemon.ok(Method::GET, "/v1/journey", None);
    assert!(s["verdict"]["p50_ns"].as_u64().is_some(), "{s}");
    assert!(s["verdict"]["samples"].as_u64().unwrap() > 0, "{s}");
    assert!(s["verdict"]["span"]
        .as_str()
        .unwrap()
        .contains("program entry"));
    assert_eq!(s["nic_to_xdp"]["measured"], false, "{s}");
    assert!(s["nic_to_xdp"]["why"]
        .as_str()
        .unwrap()
        .contains("not measured by groundzero: no device-bound program"));
    assert_measured_or_not_observed(&s);

    // The history of the stage percentiles, per minute, survives a page reload.
    let history = daemon.ok(Method::GET, "/v1/journey/history", None);
    let minutes = history["minutes"].as_array().unwrap();
    assert!(!minutes.is_empty(), "{history}");
    let last = minutes.last().unwrap();
    assert!(last["journeys"].as_u64().unwrap() > 0, "{history}");
    assert!(
        last["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["stage"] == "xdp" && st["count"].as_u64().unwrap() > 0),
        "{history}"
    );
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

/// The API's check that nothing is shown without a measurement: every stage of a passed
/// packet's path is either in `stages` (with samples) or in `not_observed` (with a reason),
/// never both; every estimated rate is for a stage with samples, its share within 0..=1.
fn assert_measured_or_not_observed(s: &Value) {
    let names = |key: &str| -> Vec<String> {
        s[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["stage"].as_str().unwrap().to_string())
            .collect()
    };
    let measured = names("stages");
    let not_observed = names("not_observed");
    for stage in ["gro", "stack", "ip", "transport", "socket", "app"] {
        let m = measured.iter().any(|x| x == stage);
        let n = not_observed.iter().any(|x| x == stage);
        assert!(m != n, "{stage}: measured {m}, not observed {n}: {s}");
    }
    for st in s["stages"].as_array().unwrap() {
        assert!(st["count"].as_u64().unwrap() > 0, "{st}");
    }
    for n in s["not_observed"].as_array().unwrap() {
        assert!(!n["why"].as_str().unwrap().is_empty(), "{n}");
    }
    for r in s["stage_rates"].as_array().unwrap() {
        match r["basis"].as_str().unwrap() {
            "counted" => assert!(r["share"].is_null(), "{r}"),
            "estimate" => {
                let share = r["share"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&share), "{r}");
                let stage = r["stage"].as_str().unwrap();
                assert!(
                    !not_observed.iter().any(|x| x == stage),
                    "an estimate for a stage not observed: {r}"
                );
                assert!(
                    r["pps"].as_f64().unwrap()
                        <= s["rates"]["filtered_passed_pps"].as_f64().unwrap() + 0.1,
                    "{r} {s}"
                );
            }
            other => panic!("basis {other}"),
        }
    }
}

/// The daemon in generic mode: the gro and stack stages cannot be observed there (XDP runs
/// after them), and the API says so instead of showing a figure; the rest is measured.
#[test]
fn daemon_in_generic_mode_reports_gro_and_stack_not_observed() {
    let topo = Topology::new("d");
    let config = format!(
        "interfaces = [\"{}\"]\nattach_mode = \"generic\"\n[journey]\nenabled = true\nsample_every = 1\nfilter = \"udp port 7040\"\n",
        topo.node_if
    );
    let daemon = TestDaemon::start_in(&topo.node, &config);
    let dst = SocketAddr::new(NODE[0].parse().unwrap(), 7040);
    let server = topo.node.run(|| UdpSocket::bind(dst)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let s = loop {
        // Also traffic outside the filter: it must not count in the filtered population.
        topo.send(GOOD[0], SocketAddr::new(NODE[0].parse().unwrap(), 7041), 20);
        topo.send(GOOD[0], dst, 10);
        assert_eq!(common::recv_expected(&server, 10), 10);
        let s = daemon.ok(Method::GET, "/v1/journey", None);
        let ready = s["outcomes"]["delivered"].as_u64().unwrap_or(0) >= 10
            && s["totals"]["filtered_passed"].as_u64().unwrap_or(0) > 0;
        if ready || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    drop(server);
    assert!(s["outcomes"]["delivered"].as_u64().unwrap() >= 10, "{s}");
    let not_observed = s["not_observed"].as_array().unwrap();
    for stage in ["gro", "stack"] {
        let n = not_observed
            .iter()
            .find(|n| n["stage"] == stage)
            .unwrap_or_else(|| panic!("{stage} is not observed in generic mode: {s}"));
        assert!(n["why"].as_str().unwrap().contains("generic XDP"), "{n}");
    }
    assert_measured_or_not_observed(&s);
    // The filtered population is counted apart from all traffic, over the whole run (one rate
    // window under load may hold a batch of one kind only): 20 packets outside the filter were
    // sent before each 10 inside it.
    let t = &s["totals"];
    let (all, filtered) = (
        t["seen"].as_u64().unwrap(),
        t["filtered_seen"].as_u64().unwrap(),
    );
    assert!(filtered > 0 && all >= filtered + 20, "{t}");
    assert_eq!(
        t["filtered_seen"],
        t["filtered_passed"].as_u64().unwrap() + t["filtered_dropped"].as_u64().unwrap(),
        "{t}"
    );
    let app = s["stage_rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["stage"] == "app")
        .cloned()
        .unwrap_or_else(|| panic!("an app rate: {s}"));
    assert_eq!(app["basis"], "estimate");
    assert_eq!(app["population"], "packets matching \"udp port 7040\"");
    drop(daemon);
}

/// The stages a delivered journey shows, in order: `head` (what precedes IP in this mode), the
/// fentry stages this kernel allows, then `tail`.
fn expected_stages(
    missing: &[groundzero::journey::MissingStage],
    head: &[&'static str],
    tail: &[&'static str],
) -> Vec<&'static str> {
    let have = |stage: &str| !missing.iter().any(|m| m.stage == stage);
    let mut stages = vec!["xdp", "xdp_verdict"];
    stages.extend(head);
    stages.extend(["ip", "transport"].into_iter().filter(|s| have(s)));
    stages.extend(tail);
    stages
}

/// Every hop once, timestamps never going backwards, and the CPU recorded on each.
fn assert_well_formed(j: &Journey) {
    let mut stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
    stages.sort_unstable();
    let n = stages.len();
    stages.dedup();
    assert_eq!(stages.len(), n, "a stage twice: {j:?}");
    assert!(j.hops.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{j:?}");
    let cpus = std::thread::available_parallelism().map_or(1024, |n| n.get() as u32);
    assert!(j.hops.iter().all(|h| h.cpu < cpus.max(64)), "{j:?}");
}

/// TCP over IPv4 and IPv6: data segments sent one at a time, each read before the next (so
/// none is coalesced), are each delivered once with the stack's hops in order; every other
/// journey of the connection (handshake, ACKs) is well formed.
#[test]
fn tcp_journeys_over_ipv4_and_ipv6() {
    let mut lab = Lab::new("t");
    let mut events = lab.shield.journey_events().unwrap();
    let filter = groundzero::journey::parse_filter("tcp port 7010").unwrap();
    let missing = lab.shield.start_journey(&lab.kernel, 1, filter).unwrap();
    let mut asm = Assembler::with_symbols(2_000_000_000, Kallsyms::load().unwrap());
    // tcp_probe (tp_btf) sees every established segment; ip_protocol_deliver_rcu adds an earlier
    // transport hop where fentry works: either way, transport once.
    let want_data = {
        let have = |stage: &str| !missing.iter().any(|m| m.stage == stage);
        let mut v = vec!["xdp", "xdp_verdict", "gro", "stack"];
        if have("ip") {
            v.push("ip");
        }
        v.extend(["transport", "socket", "app"]);
        v
    };
    for i in 0..2 {
        let node_addr = SocketAddr::new(NODE[i].parse().unwrap(), 7010);
        let listener = lab.topo.node.run(|| TcpListener::bind(node_addr)).unwrap();
        let client = lab.topo.peer.run(|| {
            let local = SocketAddr::new(GOOD[i].parse().unwrap(), 0);
            let domain = socket2::Domain::for_address(local);
            let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
            sock.bind(&local.into()).unwrap();
            sock.connect_timeout(&node_addr.into(), Duration::from_secs(2))
                .unwrap();
            let stream: TcpStream = sock.into();
            stream
        });
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut client = client;
        let mut buf = [0u8; 64];
        // One segment at a time, each read before the next is sent: nothing to coalesce with.
        for k in 0..5 {
            client.write_all(format!("seg {k}\n").as_bytes()).unwrap();
            let mut got = 0;
            while got < 6 {
                match conn.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            assert_eq!(got, 6, "segment {k} over IPv{}", if i == 0 { 4 } else { 6 });
        }
    }
    let journeys = collect(&mut events, &mut asm, |js| {
        (0..2).all(|i| {
            js.iter()
                .filter(|j| j.outcome == Outcome::Delivered && j.src.to_string() == GOOD[i])
                .count()
                >= 5
        })
    });
    for (i, good) in GOOD.iter().enumerate() {
        let delivered: Vec<_> = journeys
            .iter()
            .filter(|j| j.outcome == Outcome::Delivered && j.src.to_string() == *good)
            .collect();
        assert_eq!(
            delivered.len(),
            5,
            "IPv{}: {journeys:?}",
            if i == 0 { 4 } else { 6 }
        );
        for j in delivered {
            assert_eq!(j.protocol_name(), "tcp");
            assert_eq!(j.family, if i == 0 { 4 } else { 6 });
            assert_well_formed(j);
            let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
            assert_eq!(stages, want_data, "{j:?}");
        }
    }
    for j in &journeys {
        assert_well_formed(j);
    }
    lab.shield.stop_journey().unwrap();
}

/// Changing the rate or the filter while tracing runs (the daemon starts the tracer again on
/// every PUT with `enabled: true`) keeps the tag: a TCP segment sampled before the change and
/// read by the application after it is still followed to the read.
#[test]
fn changing_sampling_keeps_journeys_in_flight() {
    let mut lab = Lab::new("r");
    let mut events = lab.shield.journey_events().unwrap();
    let mut asm = Assembler::with_symbols(2_000_000_000, Kallsyms::load().unwrap());
    let node_addr = SocketAddr::new(NODE[0].parse().unwrap(), 7050);
    let listener = lab.topo.node.run(|| TcpListener::bind(node_addr)).unwrap();
    let mut client = lab.topo.peer.run(|| {
        let local = SocketAddr::new(GOOD[0].parse().unwrap(), 0);
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect_timeout(&node_addr.into(), Duration::from_secs(2))
            .unwrap();
        TcpStream::from(sock)
    });
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tcp_only = FlowFilter {
        protocol: 6,
        ..FlowFilter::default()
    };
    const SEGMENTS: usize = 4;
    let mut buf = [0u8; 64];
    for k in 0..SEGMENTS {
        lab.shield
            .start_journey(&lab.kernel, 1, FlowFilter::default())
            .unwrap();
        client.write_all(format!("seg {k}\n").as_bytes()).unwrap();
        // Queued on the socket, not read yet: in flight while sampling changes.
        std::thread::sleep(Duration::from_millis(100));
        lab.shield.start_journey(&lab.kernel, 7, tcp_only).unwrap();
        let mut got = 0;
        while got < 6 {
            match conn.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert_eq!(got, 6, "segment {k}");
    }
    let journeys = collect(&mut events, &mut asm, |js| {
        js.iter()
            .filter(|j| j.outcome == Outcome::Delivered)
            .count()
            >= SEGMENTS
    });
    let delivered: Vec<_> = journeys
        .iter()
        .filter(|j| j.outcome == Outcome::Delivered)
        .collect();
    assert_eq!(delivered.len(), SEGMENTS, "{journeys:?}");
    for j in delivered {
        assert_well_formed(j);
        assert_eq!(j.hops.last().unwrap().stage, "app", "{j:?}");
    }
    lab.shield.stop_journey().unwrap();
}

/// Generic XDP runs inside the stack, after the skb was built and after `netif_receive_skb`:
/// a journey there has no gro or stack hop (it is not observable, never shown as ~0), and the
/// rest of the path is still followed.
#[test]
fn generic_mode_journeys_skip_the_hops_before_xdp() {
    let mut lab = Lab::with_mode("g", AttachMode::Generic);
    let mut events = lab.shield.journey_events().unwrap();
    let missing = lab
        .shield
        .start_journey(&lab.kernel, 1, FlowFilter::default())
        .unwrap();
    let want = expected_stages(&missing, &[], &["socket", "app"]);
    let mut asm = Assembler::with_symbols(2_000_000_000, Kallsyms::load().unwrap());
    for i in 0..2 {
        let node_addr = SocketAddr::new(NODE[i].parse().unwrap(), 7020);
        let server = lab.topo.node.run(|| UdpSocket::bind(node_addr)).unwrap();
        lab.topo.send(GOOD[i], node_addr, N);
        lab.topo.send(BAD[i], node_addr, N);
        assert_eq!(common::recv_expected(&server, N), N);
    }
    let journeys = collect(&mut events, &mut asm, |js| {
        js.iter()
            .filter(|j| j.outcome == Outcome::Delivered)
            .count()
            >= 2 * N
            && js.iter().filter(|j| j.outcome == Outcome::XdpDrop).count() >= 2 * N
    });
    let delivered: Vec<_> = journeys
        .iter()
        .filter(|j| j.outcome == Outcome::Delivered)
        .collect();
    assert_eq!(delivered.len(), 2 * N, "{journeys:?}");
    for j in delivered {
        assert_well_formed(j);
        let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
        assert_eq!(stages, want, "{j:?}");
    }
    let drops = journeys.iter().filter(|j| j.outcome == Outcome::XdpDrop);
    assert_eq!(drops.count(), 2 * N);
    lab.shield.stop_journey().unwrap();
}

/// A packet socket (a capture tool, a DHCP client) gets a clone of every frame: the clone
/// shares the data and so the tag, and is queued on and read from the packet socket. Only the
/// original is the journey's: each UDP journey ends at its UDP reader, hops in order.
#[test]
fn an_af_packet_reader_does_not_confuse_journeys() {
    af_packet_reader_beside_journeys("k", AttachMode::Native, &["gro", "stack"]);
}

/// Generic mode: XDP runs after netif_receive_skb's tracepoint and before the packet socket
/// gets its clone, so the clone is the first tagged skb any hook sees; it must not take the
/// journey over from the original that reaches IP after it.
#[test]
fn an_af_packet_reader_does_not_confuse_journeys_in_generic_mode() {
    af_packet_reader_beside_journeys("kg", AttachMode::Generic, &[]);
}

fn af_packet_reader_beside_journeys(tag: &str, mode: AttachMode, head: &[&'static str]) {
    let mut lab = Lab::with_mode(tag, mode);
    let mut events = lab.shield.journey_events().unwrap();
    let missing = lab
        .shield
        .start_journey(&lab.kernel, 1, FlowFilter::default())
        .unwrap();
    let want = expected_stages(&missing, head, &["socket", "app"]);
    let mut asm = Assembler::with_symbols(2_000_000_000, Kallsyms::load().unwrap());
    // ETH_P_ALL in network order: every frame of the node's interface.
    let tap = lab
        .topo
        .node
        .run(|| {
            socket2::Socket::new(
                socket2::Domain::PACKET,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(0x0003u16.to_be() as i32)),
            )
        })
        .unwrap();
    tap.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let servers: Vec<(UdpSocket, SocketAddr)> = (0..2)
        .map(|i| {
            let node_addr = SocketAddr::new(NODE[i].parse().unwrap(), 7030);
            (
                lab.topo.node.run(|| UdpSocket::bind(node_addr)).unwrap(),
                node_addr,
            )
        })
        .collect();
    for (i, (_, node_addr)) in servers.iter().enumerate() {
        lab.topo.send(GOOD[i], *node_addr, N);
    }
    // The tap reads its copies first (a read of the clone that, mistaken for the datagram's,
    // would end the journey here), and the UDP readers only a while later.
    let mut frames = 0;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while let Ok(n) = tap.recv(&mut buf) {
        if n > 0 {
            frames += 1;
        }
    }
    assert!(frames >= 2 * N, "the packet socket saw {frames} frames");
    const LATER: Duration = Duration::from_millis(300);
    std::thread::sleep(LATER);
    for (server, _) in &servers {
        assert_eq!(common::recv_expected(server, N), N);
    }
    let journeys = collect(&mut events, &mut asm, |js| {
        js.iter()
            .filter(|j| j.outcome == Outcome::Delivered)
            .count()
            >= 2 * N
    });
    let delivered: Vec<_> = journeys
        .iter()
        .filter(|j| j.outcome == Outcome::Delivered)
        .collect();
    assert_eq!(delivered.len(), 2 * N, "{journeys:?}");
    for j in delivered {
        assert_well_formed(j);
        let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
        assert_eq!(stages, want, "{j:?}");
        // Ended at the UDP reader, not at the packet socket's read of the clone.
        let last = j.hops.last().unwrap();
        assert!(last.t_ns >= LATER.as_nanos() as u64, "{j:?}");
    }
    drop(tap);
    lab.shield.stop_journey().unwrap();
}
