//! `groundzero demo`: the whole story on one machine, in the lab's throw-away namespaces.
//!
//! It builds the two-node lab (node A, node B, legitimate peers, attackers) with a real CrowdSec
//! LAPI (`groundzero_lab::fleet`), a daemon (`groundzero run`) on each node registered with it,
//! and the example validator node inside node A's namespace, and runs three phases of the same
//! legitimate traffic against node A: calm; a flood with the shield off; the same flood with the
//! shield on. "Off" is the daemon's monitor mode: the XDP program runs and counts what it would
//! drop, the node's bans are recorded, but nothing is dropped, so the node pays for every flood
//! packet. Each flood phase uses fresh spoofed sources, so bans do not carry over.
//!
//! The fourth phase is the fleet: the attack hits node A again, node A's validator bans the
//! attackers, node A's daemon pushes the bans to the LAPI, node B's daemon pulls them, and the
//! same attackers' packets to node B are dropped by node B's XDP program. It prints the time from
//! node A's ban to node B's first drop of each source and node B's per-source counters (read from
//! its kernel map). Without the crowdsec binaries the demo stops at once and says to run
//! scripts/setup.sh.
//!
//! The fifth phase is the journey's A/B on node A (`groundzero journey --compare`'s): the same
//! probes with the program attached and detached, and the cost of a blocked packet dropped by
//! XDP, by nftables and at a closed port.
//!
//! Everything is bounded in count and time and uses only 198.18.0.0/15 and 2001:2::/48; on the
//! way out (normal end, error or Ctrl-C) the children are stopped and `lab::down` removes the
//! namespaces and pins.
use std::{
    fs::File,
    io::Read,
    net::{IpAddr, TcpListener},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use groundzero_api::client::{Client, Endpoint, Method};
use groundzero_lab::{
    self as lab,
    fleet::{self, Fleet, FleetSpec, Spread},
    harness::PinnedMaps,
    harness::{node, DaemonConfig, Forward, Launch, Workdir},
    topology::NODE_NS,
    traffic::Limits,
    watch::{BanClock, XdpTally},
    LabState, PhasePlan, PhaseReport,
};
use serde_json::json;

use crate::lab::{legit_line, print_phase, stop_on_ctrl_c};

#[derive(clap::Args)]
pub struct Args {
    /// Length of the calm phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    calm: Duration,
    /// Length of each flood phase.
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    phase: Duration,
    /// Requests per second of each legitimate client (3 per peer).
    #[arg(long, default_value_t = 50)]
    legit_pps: u32,
    /// Spoofed UDP request flood, packets per second.
    #[arg(long, default_value_t = 40_000)]
    flood_pps: u32,
    /// Port of the journey page and API on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also turn on the daemon's XDP rate limit at this many packets per second per source
    /// (0: off, so every ban in the demo is the validator node's).
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// After the summary, keep everything up this long for the journey page.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// After the summary, keep everything up until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

/// Ports inside the node's namespace; the same numbers are forwarded from this host's loopback.
struct Ports {
    api: u16,
    metrics: u16,
}

/// Node A's daemon settings for the demo, merged into the fleet's config of node A (which holds
/// the paths, the interface and `[crowdsec]`). The one place that says how the demo's daemon
/// runs (add new sections here). Monitor mode is on: phase 2 runs with the shield off, phase 3
/// turns it off through the API.
fn daemon_config(dir: &Workdir, ports: &Ports, args: &Args) -> DaemonConfig {
    DaemonConfig::new()
        .set("monitor", true)
        .set("api.tcp_listen", format!("127.0.0.1:{}", ports.api))
        .set_path("api.token_file", &dir.path("token"))
        .set("metrics.listen", format!("127.0.0.1:{}", ports.metrics))
        .set("journey.enabled", true)
        .set("journey.sample_every", 256u32)
        .set(
            "journey.filter",
            format!("port {}", lab::peer_protocol::PORT),
        )
        .set("ratelimit.rate", args.rate_limit)
        .set("ratelimit.ban_ttl", "2m")
}

pub fn run(args: Args) -> Result<()> {
    let stop = stop_on_ctrl_c()?;
    let node_bin = sibling("validator-node")?;
    // Before anything is built: the fourth phase needs a real LAPI, and a demo that stops
    // after three phases for want of it would be a surprise.
    lab::crowdsec::Install::locate().context(
        "the demo's fourth phase shares bans between two nodes through CrowdSec:          run scripts/setup.sh (it unpacks crowdsec 1.4.6), or ./scripts/demo.sh, which runs it",
    )?;
    // Measured before the daemons start: they turn on the kernel's per-program run
    // statistics, which add to every run.
    let cost = measure_cost();
    let dir = Workdir::create("groundzero-demo").context("making the demo's directory")?;
    let ports = Ports {
        api: free_port(args.port)?,
        metrics: free_port(0)?,
    };
    let token = random_token()?;
    std::fs::write(dir.path("token"), &token).context("writing the API token")?;
    let node_a_toml = daemon_config(&dir, &ports, &args)
        .render()
        .context("writing node A's config")?;
    let me = std::env::current_exe().context("finding this executable")?;
    let spec = FleetSpec {
        node_a_toml,
        ..FleetSpec::default()
    };
    let fleet = Fleet::up(&spec, &me, Some(&stop))
        .context("building the two-node lab with its CrowdSec LAPI and daemons")?;
    let state = fleet.state().clone();
    let socket = fleet.node_a().socket().to_path_buf();
    println!("groundzero demo: the lab is up (namespaces gz-lab-*, bridge, veth; addresses from 198.18.0.0/15 and 2001:2::/48)");
    println!(
        "  node A {} / {} in {} (XDP on {}), node B {} / {} in {} (XDP on {}), {} peers, {} attackers",
        state.node_v4,
        state.node_v6,
        state.node_ns,
        state.node_if,
        fleet.node_b().host.v4,
        fleet.node_b().host.v6,
        fleet.node_b().host.netns,
        fleet.node_b().host.iface,
        state.peers.len(),
        state.attackers.len()
    );
    println!(
        "  CrowdSec LAPI (1.4.6, LAPI only) on {}; each node's daemon pulls its decisions every {} and pushes its own bans every {}",
        fleet.lapi_url(),
        spec.pull_interval,
        spec.push_interval
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(Endpoint::Unix(socket.clone()));
    let node = node::start(
        &in_node(node::command(
            &node_bin,
            &socket,
            "2m",
            NODE_NS,
            &dir.path("node.log"),
        )),
        Some(&stop),
    )
    .context("starting the validator node")?;
    let _forwards = [ports.api, ports.metrics]
        .into_iter()
        .map(|port| Forward::start(NODE_NS, port))
        .collect::<Result<Vec<_>, _>>()
        .context("forwarding the page's and the metrics' ports into the node")?;
    println!(
        "  node A: daemon (groundzero run, monitor mode) and validator-node are running in {NODE_NS}; node B: a daemon (enforcing); logs in {} and {}",
        dir.dir().display(),
        fleet::FLEET_DIR
    );
    // Printed now as well as at the end, so the phases can be watched live in the page.
    print_links(&ports, &token, &socket);
    println!();

    let mut rows = Vec::new();
    let calm = PhasePlan::calm(args.calm, args.legit_pps);
    let flood = |block: u8| PhasePlan {
        duration: args.phase,
        legit_pps: args.legit_pps,
        flood_pps: args.flood_pps,
        source_block: block,
        ..PhasePlan::default()
    };
    let phases = [
        ("1. calm", calm, false),
        ("2. flood, shield off (monitor)", flood(1), false),
        ("3. flood, shield on", flood(2), true),
    ];
    for (title, plan, shield) in phases {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if shield {
            rt.block_on(client.call(Method::PUT, "/v1/monitor", Some(&json!({"enabled": false}))))
                .context("turning monitor mode off")?;
        }
        match run_phase(title, &state, &plan, &rt, &client, &stop, || {})? {
            Some(row) => rows.push(row),
            None => break, // interrupted mid-phase: its numbers would mean nothing
        }
        std::thread::sleep(Duration::from_millis(500)); // let queues drain between phases
    }
    let mut spread = None;
    if !stop.load(Ordering::SeqCst) {
        let (row, s) = fleet_phase(&fleet, &flood(3), &rt, &client, &stop)?;
        if let Some(row) = row {
            rows.push(row);
            spread = Some(s);
        }
    }

    let ab = if stop.load(Ordering::SeqCst) {
        None
    } else {
        Some(ab_phase(&rt, &client))
    };

    if stop.load(Ordering::SeqCst) {
        println!("\ninterrupted: cleaning up");
    }
    print_summary(&rows);
    if let Some(s) = &spread {
        println!("  {}", spread_line(s));
    }
    match ab {
        Some(Ok(report)) => print!("\n{}", crate::journey_compare::text(&report)),
        Some(Err(e)) => println!("\n(the journey's A/B did not run: {e:#})"),
        None => {}
    }
    if !stop.load(Ordering::SeqCst) {
        match &cost {
            Ok(lines) => {
                println!("\nXDP verdict cost on this host (BPF_PROG_TEST_RUN, 1,000,000 runs each, includes test_run's own overhead):");
                for line in lines {
                    println!("  {line}");
                }
            }
            Err(e) => println!("(could not measure the verdict cost: {e:#})"),
        }
        print_links(&ports, &token, &socket);
        linger(&args, &stop);
    }
    drop(node);
    drop(fleet);
    drop(dir);
    println!("cleaned up: processes stopped, lab namespaces, pins and the LAPI removed");
    // The fourth phase's claim did not hold: say so in the exit status too.
    if let Some(s) = spread.filter(|s| s.banned_a() == 0 || !s.waiting_on_b().is_empty()) {
        bail!(
            "the fleet phase failed: node B dropped {} of the {} sources node A banned (daemons' logs were in {})",
            s.dropped_b(),
            s.banned_a(),
            fleet::FLEET_DIR
        );
    }
    Ok(())
}

/// The fifth phase: the journey's A/B on node A (see `groundzero_lab::ab`): the same probes
/// with node A's program attached and then detached, and what a blocked packet costs when XDP
/// drops it and when the stack does. Node A is unprotected for its run B (some seconds, after
/// the attack is over). Kept by the daemon, so the page shows it too.
fn ab_phase(
    rt: &tokio::runtime::Runtime,
    client: &Client,
) -> Result<groundzero_api::journey_ab::AbReport> {
    println!(
        "\nnext, the journey's A/B on node A: the same 1,000 probes with XDP attached, then detached, and bursts of blocked packets"
    );
    let request = groundzero_api::journey_ab::AbRequest {
        probes: Some(1_000),
        flood_packets: None,
    };
    rt.block_on(client.request(
        Method::POST,
        groundzero_api::endpoints::JOURNEY_AB,
        Some(&request),
    ))
    .context("POST /v1/journey/ab")
}

fn print_links(ports: &Ports, token: &str, socket: &Path) {
    println!(
        "\njourney page: http://127.0.0.1:{}/#token={token}",
        ports.api
    );
    println!("metrics:      http://127.0.0.1:{}/metrics", ports.metrics);
    println!(
        "bans:         groundzero --socket {} list --source app:validator-node",
        socket.display()
    );
}

/// Keeps everything up for the journey page, as asked.
fn linger(args: &Args, stop: &AtomicBool) {
    {
        let until = if args.keep_running {
            println!("\neverything stays up until Ctrl-C");
            None
        } else {
            println!(
                "\neverything stays up for {} (Ctrl-C ends it sooner; --keep-running keeps it)",
                humantime::format_duration(args.linger)
            );
            Some(Instant::now() + args.linger)
        };
        while !stop.load(Ordering::SeqCst) && until.is_none_or(|u| Instant::now() < u) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One phase's line in the summary.
struct Row {
    title: &'static str,
    report: PhaseReport,
    xdp: XdpTally,
    bans: usize,
    clock: BanClock,
}

fn run_phase(
    title: &'static str,
    state: &LabState,
    plan: &PhasePlan,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    stop: &AtomicBool,
    mut on_tick: impl FnMut(),
) -> Result<Option<Row>> {
    println!("{title}: {}", describe(plan));
    let before = rt.block_on(XdpTally::read(client))?;
    let bans_before = rt.block_on(client.blocked_by(APP))?.len();
    // What the node can see and ban: the flood's spoofed sources and the sender of invalid
    // messages (atk3). SYN-flood sources never reach the application.
    let mut expected = if plan.flood_pps > 0 {
        plan.flood_sources()
    } else {
        Vec::new()
    };
    if plan.invalid_pps > 0 {
        expected.extend(state.attackers.get(2).map(|a| IpAddr::from(a.v4)));
    }
    let mut clock = BanClock::new(expected, Instant::now() + plan.attack_delay);
    let mut last_poll = Instant::now();
    let report = lab::run_phase(state, plan, stop, |_| {
        if last_poll.elapsed() >= Duration::from_millis(200) && clock.expected() > 0 {
            last_poll = Instant::now();
            let _ = rt.block_on(clock.poll(client, APP));
            on_tick();
        }
    })
    .context("running the phase's traffic")?;
    if stop.load(Ordering::SeqCst) {
        return Ok(None);
    }
    if clock.expected() > 0 {
        let _ = rt.block_on(clock.poll(client, APP));
    }
    let xdp = rt.block_on(XdpTally::read(client))?.since(&before);
    let bans = rt
        .block_on(client.blocked_by(APP))?
        .len()
        .saturating_sub(bans_before);
    print_phase(&format!("  {title}"), &report);
    println!(
        "  XDP: {} dropped, {} would have been dropped (monitor), {} malformed; {} new ban(s) by the node{}",
        xdp.dropped,
        xdp.would_drop,
        xdp.malformed,
        bans,
        ban_timing(&clock)
    );
    println!();
    Ok(Some(Row {
        title,
        report,
        xdp,
        bans,
        clock,
    }))
}

const APP: &str = "app:validator-node";

/// Requests per second the attackers send node B in the fourth phase (shared by the sources).
const NODE_B_PPS: u32 = 1_000;
/// How long node B may take to drop a source node A banned (the bound).
const SPREAD_LIMIT: Duration = Duration::from_secs(15);

/// The fourth phase: the flood hits node A (shield on); node A's validator bans, its daemon
/// pushes the bans to the LAPI, node B's daemon pulls them. All along, the same spoofed
/// sources send node B [`NODE_B_PPS`] requests per second, so node B's kernel map counts the
/// first drop of each source; the phase waits (up to [`SPREAD_LIMIT`] after the last ban on
/// node A) until node B drops every source node A banned.
fn fleet_phase(
    fleet: &Fleet,
    plan: &PhasePlan,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    stop: &AtomicBool,
) -> Result<(Option<Row>, Spread)> {
    let title = "4. fleet: A bans, B drops";
    let state = fleet.state();
    let node_b = fleet.node_b();
    let sources = plan.flood_sources();
    let mut spread = Spread::new(sources.clone());
    let maps = PinnedMaps::open(node_b.pin_dir()).context("opening node B's pinned maps")?;
    let atk = state
        .attackers
        .first()
        .context("the lab has no attacker")?
        .clone();
    println!(
        "next, the fleet: node A is attacked as in phase 3; its validator's bans are pushed to the LAPI and pulled by node B; all along, {NODE_B_PPS} requests/s from the same {} spoofed sources go to node B ({})",
        sources.len(),
        node_b.host.v4
    );
    let b_stop = AtomicBool::new(false);
    let b_limits = Limits::for_duration(NODE_B_PPS, plan.duration + SPREAD_LIMIT);
    let a_socket = fleet.node_a().socket().to_path_buf();
    let poll = |spread: &mut Spread| {
        let asked = Instant::now();
        if let Ok(blocked) = fleet::blocked_by(&a_socket, APP) {
            spread.observe_a(&blocked, asked);
        }
        let _ = spread.observe_b(&maps, Instant::now());
    };
    let (row, sent_b) = std::thread::scope(|scope| -> Result<_> {
        let sender = scope.spawn(|| fleet::flood_node(node_b, &atk, &sources, b_limits, &b_stop));
        let row = run_phase(title, state, plan, rt, client, stop, || poll(&mut spread));
        // The phase's traffic is over; node B may still be pulling the last bans.
        while row.as_ref().is_ok_and(Option::is_some)
            && !stop.load(Ordering::SeqCst)
            && !spread.waiting_on_b().is_empty()
            && spread.overdue(SPREAD_LIMIT, Instant::now()).len() < spread.waiting_on_b().len()
        {
            std::thread::sleep(Duration::from_millis(200));
            poll(&mut spread);
        }
        poll(&mut spread);
        b_stop.store(true, Ordering::SeqCst);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender to node B panicked"))?
            .context("sending to node B")?;
        Ok((row?, sent.sent))
    })?;
    if row.is_none() {
        return Ok((None, spread));
    }
    println!("  {}", spread_line(&spread));
    println!(
        "  node B: {sent_b} requests sent from those sources; drops per source counted by node B's XDP program (its kernel map's entries, pulled from CrowdSec):"
    );
    for chunk in spread.sources().chunks(4) {
        let cells: Vec<String> = chunk
            .iter()
            .map(|a| format!("{:<22} {:>6}", a.to_string(), spread.hits_b(a)))
            .collect();
        println!("    {}", cells.join("   "));
    }
    if let Ok(held) = fleet::blocked_by(node_b.socket(), "crowdsec") {
        println!(
            "  node B holds {} entries from CrowdSec (groundzero --socket {} list --source crowdsec)",
            held.len(),
            node_b.socket().display()
        );
    }
    println!();
    Ok((row, spread))
}

/// `node A banned 64 of 64; node B dropped 64 of them; ban on A → first drop on B: ...`
fn spread_line(s: &Spread) -> String {
    let timing = match s.delay_summary() {
        Some((median, max)) => format!(
            "from node A's ban to node B's first XDP drop of the source: median {:.1} s, max {:.1} s (polled every 0.2 s)",
            median.as_secs_f64(),
            max.as_secs_f64()
        ),
        None => "node B dropped none of them".into(),
    };
    let waiting = s.waiting_on_b();
    let shown: Vec<String> = waiting.iter().take(6).map(IpAddr::to_string).collect();
    format!(
        "fleet: node A banned {} of {} sources, node B dropped {} of them in XDP; {timing}{}",
        s.banned_a(),
        s.sources().len(),
        s.dropped_b(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(
                "; {} NOT dropped by node B within {} s: {}{}",
                waiting.len(),
                SPREAD_LIMIT.as_secs(),
                shown.join(", "),
                if waiting.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            )
        }
    )
}

fn describe(plan: &PhasePlan) -> String {
    if plan.flood_pps == 0 {
        return format!(
            "legitimate traffic only for {}",
            humantime::format_duration(plan.duration)
        );
    }
    format!(
        "{} of legitimate traffic; from {} s on: {} pps of spoofed GET requests from {} sources, {} SYN/s, {} malformed/s, {} invalid messages/s",
        humantime::format_duration(plan.duration),
        plan.attack_delay.as_secs(),
        plan.flood_pps,
        plan.flood_sources().len(),
        plan.syn_pps,
        plan.malformed_pps,
        plan.invalid_pps
    )
}

fn ban_timing(clock: &BanClock) -> String {
    if clock.expected() == 0 {
        return String::new();
    }
    match clock.all_banned_after() {
        Some(t) => format!(
            "; all {} attackers the node can see banned {:.1} s after the attack began",
            clock.expected(),
            t.as_secs_f64()
        ),
        None => format!(
            "; {} of {} attackers banned",
            clock.banned(),
            clock.expected()
        ),
    }
}

fn print_summary(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!("summary");
    println!(
        "  {:<32} {:<44} {:>12} {:>12} {:>6} {:>10}",
        "phase", "legitimate requests answered", "attack pkts", "XDP dropped", "bans", "all banned"
    );
    for r in rows {
        let dropped = if r.xdp.would_drop > 0 && r.xdp.dropped == 0 {
            format!("0 ({} w.)", short(r.xdp.would_drop))
        } else {
            short(r.xdp.dropped)
        };
        println!(
            "  {:<32} {:<44} {:>12} {:>12} {:>6} {:>10}",
            r.title,
            legit_line(&r.report.legit_total()),
            r.report.attack_packets(),
            dropped,
            r.bans,
            r.clock
                .all_banned_after()
                .map(|t| format!("{:.1} s", t.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("  (w. = would have been dropped: monitor mode counts but passes)");
}

/// The cost of one verdict on this host: BPF_PROG_TEST_RUN over 1M runs per case, on a shield
/// of its own (not the daemon's), with one entry of each kind. One line per case.
fn measure_cost() -> Result<Vec<String>> {
    use groundzero::{parse_entry, Action, Shield, ShieldOptions};
    use groundzero_lab::craft;
    let mut shield = Shield::load(ShieldOptions::default())?;
    shield.block(parse_entry("198.18.0.66")?)?;
    shield.block(parse_entry("198.19.66.0/24")?)?;
    shield.allow(parse_entry("198.18.0.10")?)?;
    let mut lines = Vec::new();
    for (label, src, expect) in [
        ("pass, no match", "198.18.0.200", Action::Pass),
        ("pass, allowlisted", "198.18.0.10", Action::Pass),
        ("drop, exact", "198.18.0.66", Action::Drop),
        ("drop, prefix", "198.19.66.9", Action::Drop),
    ] {
        let packet = craft::udp4(src.parse()?, &[0u8; 64]);
        let (action, per_run) = shield.test_run_repeat(&packet, 1_000_000)?;
        anyhow::ensure!(action == expect, "{label}: the program returned {action:?}");
        lines.push(format!(
            "{label:<20} {:>6} ns per packet",
            per_run.as_nanos()
        ));
    }
    Ok(lines)
}

fn short(n: u64) -> String {
    if n >= 10_000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// A binary built next to this one (`cargo build` builds the whole workspace's defaults).
fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this executable")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release` (or run ./scripts/demo.sh)",
            path.display()
        );
    }
    Ok(path)
}

/// A child in the node's namespace, in a process group of its own (a Ctrl-C in the terminal
/// reaches only the demo, which then stops the children in order and reports, instead of the
/// daemon vanishing mid-phase), and sent SIGTERM if the demo dies first (`lab down` would stop
/// it anyway).
fn in_node(launch: Launch) -> Launch {
    launch
        .in_netns(NODE_NS)
        .own_process_group()
        .die_with_parent()
}

fn free_port(wanted: u16) -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", wanted)).with_context(|| {
        format!("port {wanted} on 127.0.0.1 is taken: choose another with --port")
    })?;
    Ok(listener.local_addr()?.port())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the API token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
