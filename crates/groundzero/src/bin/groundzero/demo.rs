//! `groundzero demo`: the whole story on one machine, in throw-away network namespaces.
//!
//! A "node" namespace runs a UDP echo service; a "world" namespace holds legitimate clients and
//! attackers. The same traffic runs twice: with the shield detached, then attached to the node's
//! interface. Everything is bounded in count and time, uses only 198.18.0.0/15 and 2001:2::/48,
//! and the namespaces are removed on exit, on error and on Ctrl-C.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use groundzero::{
    craft,
    netns::{veth, Netns},
    parse_entry, Action, AttachMode, Shield, ShieldOptions,
};

use crate::table;

#[derive(clap::Args)]
pub struct Args {
    /// Requests each legitimate client sends per phase.
    #[arg(long, default_value_t = 300)]
    requests: u32,
    /// Packets each attacker sends per phase.
    #[arg(long, default_value_t = 3000)]
    flood: u32,
}

const PORT: u16 = 7000;
const NODE_IF: &str = "gzdemo-n";
const WORLD_IF: &str = "gzdemo-w";
const NODE_V4: &str = "198.18.0.1";
const NODE_V6: &str = "2001:2::1";
const LEGIT: [&str; 2] = ["198.18.0.10", "2001:2::10"];
const ATTACKERS: [&str; 6] = [
    "198.18.0.66",
    "198.19.66.1",
    "198.19.66.2",
    "198.19.66.3",
    "2001:2::66",
    "2001:2:0:66::1",
];
const BLOCKLIST: [&str; 4] = [
    "198.18.0.66",
    "198.19.66.0/24",
    "2001:2::66",
    "2001:2:0:66::/64",
];
const ALLOWLIST: [&str; 1] = ["198.18.0.10"];

pub fn run(args: Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    Netns::remove_stale();
    let world = Netns::create("demo-w").context("creating the world namespace")?;
    let node = Netns::create("demo-n").context("creating the node namespace")?;
    build_topology(&world, &node)?;
    println!(
        "groundzero demo: namespaces {} (node) and {} (world), veth {NODE_IF} <-> {WORLD_IF}",
        node.name(),
        world.name()
    );
    println!("  no real interface is touched; traffic stays in 198.18.0.0/15 and 2001:2::/48\n");

    let mut shield = Shield::load(ShieldOptions::default())
        .context("loading the XDP program (are you root?)")?;
    let blocks: Vec<_> = BLOCKLIST
        .iter()
        .map(|s| parse_entry(s))
        .collect::<Result<_, _>>()?;
    let allows: Vec<_> = ALLOWLIST
        .iter()
        .map(|s| parse_entry(s))
        .collect::<Result<_, _>>()?;
    shield.block_all(&blocks)?;
    shield.allow_all(&allows)?;
    println!("  blocklist: {}", BLOCKLIST.join(", "));
    println!("  allowlist: {}", ALLOWLIST.join(", "));
    println!(
        "  legitimate clients: {}   attackers: {}\n",
        LEGIT.join(", "),
        ATTACKERS.join(", ")
    );

    let received = Arc::new(Mutex::new(HashMap::<IpAddr, u64>::new()));
    let server_stop = Arc::new(AtomicBool::new(false));
    let servers = start_echo_servers(&node, received.clone(), server_stop.clone())?;

    let without = run_phase(&world, &args, &received, &stop)?;
    report("phase 1: shield detached", &without, &args);

    let active = node
        .run(|| shield.attach(NODE_IF, AttachMode::Auto))
        .context("attaching to the node's interface")?;
    let before = shield.counters()?;
    let with = run_phase(&world, &args, &received, &stop)?;
    let counted = shield.counters()?.since(&before);
    report(
        &format!("phase 2: shield attached ({active} XDP on {NODE_IF})"),
        &with,
        &args,
    );
    println!(
        "XDP counters during phase 2:\n{}",
        table::render(&counted, None)
    );

    println!("per-entry hits:");
    for entry in shield.blocked()?.iter().chain(shield.allowed()?.iter()) {
        println!("  {:<20} {:>8} hits", entry.net.to_string(), entry.hits);
    }
    print_cost(&shield)?;

    server_stop.store(true, Ordering::SeqCst);
    for server in servers {
        let _ = server.join();
    }
    drop(shield);
    let names = (node.name().to_string(), world.name().to_string());
    drop((node, world));
    println!(
        "\ncleaned up: detached, namespaces {} and {} removed",
        names.0, names.1
    );
    if stop.load(Ordering::SeqCst) {
        println!("(interrupted)");
    }
    Ok(())
}

fn build_topology(world: &Netns, node: &Netns) -> Result<()> {
    veth(world, WORLD_IF, node, NODE_IF)?;
    for ns in [world, node] {
        ns.sysctl("net.ipv6.conf.all.accept_ra", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    }
    node.ip(&["addr", "add", &format!("{NODE_V4}/15"), "dev", NODE_IF])?;
    node.ip(&[
        "addr",
        "add",
        &format!("{NODE_V6}/48"),
        "dev",
        NODE_IF,
        "nodad",
    ])?;
    for addr in LEGIT.iter().chain(ATTACKERS.iter()) {
        let prefix = if addr.contains(':') { "48" } else { "15" };
        let mut cmd = vec!["addr", "add"];
        let cidr = format!("{addr}/{prefix}");
        cmd.extend([cidr.as_str(), "dev", WORLD_IF]);
        if addr.contains(':') {
            cmd.push("nodad");
        }
        world.ip(&cmd)?;
    }
    Ok(())
}

fn start_echo_servers(
    node: &Netns,
    received: Arc<Mutex<HashMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for bind in [format!("{NODE_V4}:{PORT}"), format!("[{NODE_V6}]:{PORT}")] {
        let socket = node
            .run(|| UdpSocket::bind(&bind))
            .with_context(|| format!("binding {bind} in the node"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let received = received.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    *received.lock().unwrap().entry(from.ip()).or_default() += 1;
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        }));
    }
    Ok(handles)
}

struct Phase {
    /// (answered, sent, latencies) per legitimate client.
    legit: Vec<(String, u32, u32, Vec<Duration>)>,
    /// Packets the node's socket received from each attacker.
    attack_received: Vec<(String, u64)>,
    attack_sent: u64,
    elapsed: Duration,
}

fn run_phase(
    world: &Netns,
    args: &Args,
    received: &Mutex<HashMap<IpAddr, u64>>,
    stop: &AtomicBool,
) -> Result<Phase> {
    received.lock().unwrap().clear();
    let started = Instant::now();
    let phase = world.run(|| {
        std::thread::scope(|scope| {
            let attackers: Vec<_> = ATTACKERS
                .iter()
                .map(|src| scope.spawn(move || flood(src, args.flood, stop)))
                .collect();
            let clients: Vec<_> = LEGIT
                .iter()
                .map(|src| scope.spawn(move || (src.to_string(), client(src, args.requests, stop))))
                .collect();
            let attack_sent: u64 = attackers.into_iter().map(|h| h.join().unwrap()).sum();
            let legit = clients
                .into_iter()
                .map(|h| {
                    let (src, (ok, sent, lat)) = h.join().unwrap();
                    (src, ok, sent, lat)
                })
                .collect();
            (legit, attack_sent)
        })
    });
    // Let the last echoes land before reading what the node saw.
    std::thread::sleep(Duration::from_millis(200));
    let seen = received.lock().unwrap();
    let attack_received = ATTACKERS
        .iter()
        .map(|a| {
            (
                a.to_string(),
                seen.get(&a.parse::<IpAddr>().unwrap())
                    .copied()
                    .unwrap_or(0),
            )
        })
        .collect();
    Ok(Phase {
        legit: phase.0,
        attack_received,
        attack_sent: phase.1,
        elapsed: started.elapsed(),
    })
}

fn target_for(src: &str) -> SocketAddr {
    let ip: IpAddr = if src.contains(':') {
        NODE_V6.parse().unwrap()
    } else {
        NODE_V4.parse().unwrap()
    };
    SocketAddr::new(ip, PORT)
}

/// Sends `count` datagrams from `src`, paced to about 10k packets/s, bounded in time.
fn flood(src: &str, count: u32, stop: &AtomicBool) -> u64 {
    let Ok(socket) = UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0)) else {
        return 0;
    };
    let target = target_for(src);
    let payload = [0xAA; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    for i in 0..count {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        if socket.send_to(&payload, target).is_ok() {
            sent += 1;
        }
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    sent
}

/// Request/response from `src`: returns (answered, sent, round-trip times).
fn client(src: &str, requests: u32, stop: &AtomicBool) -> (u32, u32, Vec<Duration>) {
    let Ok(socket) = UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0)) else {
        return (0, 0, vec![]);
    };
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    let target = target_for(src);
    let mut answered = 0;
    let mut sent = 0;
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..requests {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let msg = i.to_be_bytes();
        let t0 = Instant::now();
        if socket.send_to(&msg, target).is_err() {
            continue;
        }
        sent += 1;
        // Skip stale echoes of earlier, timed-out requests.
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n == 4 && buf[..4] == msg {
                answered += 1;
                rtts.push(t0.elapsed());
                break;
            }
        }
    }
    (answered, sent, rtts)
}

fn report(title: &str, phase: &Phase, args: &Args) {
    println!("{title}  ({:.1}s)", phase.elapsed.as_secs_f64());
    for (src, ok, sent, rtts) in &phase.legit {
        let mut sorted = rtts.clone();
        sorted.sort();
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * p) as usize)
                .map(|d| d.as_micros())
                .unwrap_or(0)
        };
        println!(
            "  legit    {src:<16} answered {ok:>5}/{sent:<5} ({:.1}%)  rtt p50 {} µs  p99 {} µs",
            100.0 * *ok as f64 / (*sent).max(1) as f64,
            pct(0.5),
            pct(0.99)
        );
    }
    let reached: u64 = phase.attack_received.iter().map(|(_, n)| n).sum();
    println!(
        "  attack   {} sources, {} packets sent ({} per source), {} reached the node's socket",
        ATTACKERS.len(),
        phase.attack_sent,
        args.flood,
        reached
    );
    println!();
}

/// The cost of one verdict, measured here with BPF_PROG_TEST_RUN over 1M runs.
fn print_cost(shield: &Shield) -> Result<()> {
    println!("\nXDP verdict cost on this host (BPF_PROG_TEST_RUN, 1,000,000 runs each, includes test_run's own overhead):");
    let cases = [
        ("pass, no match", "198.18.0.200"),
        ("pass, allowlisted", "198.18.0.10"),
        ("drop, exact", "198.18.0.66"),
        ("drop, prefix", "198.19.66.9"),
    ];
    for (label, src) in cases {
        let packet = craft::udp4(src.parse()?, &[0u8; 64]);
        let (action, per_run) = shield.test_run_repeat(&packet, 1_000_000)?;
        let expect = if label.starts_with("drop") {
            Action::Drop
        } else {
            Action::Pass
        };
        anyhow::ensure!(action == expect, "{label}: the program returned {action:?}");
        println!("  {label:<20} {:>6} ns per packet", per_run.as_nanos());
    }
    Ok(())
}
