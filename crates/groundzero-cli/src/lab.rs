//! `groundzero lab up|down|status|traffic`: the lab topology by hand (see `groundzero_lab`), and
//! `lab up --nodes 2 --crowdsec`: two nodes with their daemons sharing bans through one CrowdSec
//! LAPI (`groundzero_lab::fleet`).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use groundzero_lab::{
    self as lab,
    fleet::{Fleet, FleetSpec},
    traffic::LegitReport,
    Lab, LabSpec, PhasePlan, PhaseReport,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// Build the namespaces (node, peers, attackers, bridge); they stay until `lab down`.
    Up {
        #[arg(long, default_value_t = 3)]
        peers: u8,
        #[arg(long, default_value_t = 3)]
        attackers: u8,
        /// Protected nodes: 1, or 2 (node B in gz-lab-nodeb, and a link from this host into the
        /// lab's bridge at 198.18.0.254).
        #[arg(long, default_value_t = 1)]
        nodes: u8,
        /// With --nodes 2: start a CrowdSec LAPI on 198.18.0.254 and a daemon on each node,
        /// registered with it (a bouncer key and a machine each), pulling its decisions and
        /// pushing their own bans. Needs the crowdsec binaries (scripts/setup.sh).
        #[arg(long)]
        crowdsec: bool,
    },
    /// Remove every lab namespace, link and pin, and stop processes inside (also after a crash).
    Down,
    /// What is up.
    Status,
    /// Run one phase of traffic in the lab that is up: legitimate clients on every peer, and the
    /// attacks (rates of 0 turn one off). Everything is bounded by --duration.
    Traffic(TrafficArgs),
}

#[derive(clap::Args)]
pub struct TrafficArgs {
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests per second of each legitimate client.
    #[arg(long, default_value_t = 50)]
    legit_pps: u32,
    /// Spoofed UDP request flood, packets per second in all.
    #[arg(long, default_value_t = 40_000)]
    flood_pps: u32,
    /// Spoofed flood sources per address family (v4, v6).
    #[arg(long, default_value_t = 48)]
    flood_sources_v4: u16,
    #[arg(long, default_value_t = 16)]
    flood_sources_v6: u16,
    /// Spoofed sources come from 198.19.BLOCK.0/24 and 2001:2:66:BLOCK::/64.
    #[arg(long, default_value_t = 1)]
    source_block: u8,
    #[arg(long, default_value_t = 2_000)]
    syn_pps: u32,
    #[arg(long, default_value_t = 20)]
    malformed_pps: u32,
    #[arg(long, default_value_t = 20)]
    invalid_pps: u32,
    /// No attacks at all.
    #[arg(long)]
    calm: bool,
}

impl TrafficArgs {
    fn plan(&self) -> PhasePlan {
        if self.calm {
            return PhasePlan::calm(self.duration, self.legit_pps);
        }
        PhasePlan {
            duration: self.duration,
            legit_pps: self.legit_pps,
            flood_pps: self.flood_pps,
            flood_sources_v4: self.flood_sources_v4,
            flood_sources_v6: self.flood_sources_v6,
            source_block: self.source_block,
            syn_pps: self.syn_pps,
            malformed_pps: self.malformed_pps,
            invalid_pps: self.invalid_pps,
            ..PhasePlan::default()
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        LabCommand::Up {
            peers,
            attackers,
            nodes,
            crowdsec: false,
        } => up(LabSpec {
            peers,
            attackers,
            nodes,
        }),
        LabCommand::Up {
            peers,
            attackers,
            nodes,
            crowdsec: true,
        } => up_fleet(peers, attackers, nodes),
        LabCommand::Down => down(),
        LabCommand::Status => status(),
        LabCommand::Traffic(t) => traffic(t),
    }
}

fn up(spec: LabSpec) -> Result<()> {
    let state = Lab::up(spec)
        .context("building the lab")?
        .keep()
        .context("saving the lab's state")?;
    println!("lab is up ({}):", lab::topology::STATE_FILE);
    println!(
        "  node   {:<14} {} / {}  interface {} (protect this one)",
        state.node_ns, state.node_v4, state.node_v6, state.node_if
    );
    for h in state.peers.iter().chain(&state.attackers) {
        println!("  {:<6} {:<14} {} / {}", h.name, h.netns, h.v4, h.v6);
    }
    println!(
        "  spoofed flood sources: {} and {} (routed nowhere by the node)",
        lab::topology::SPOOF_V4,
        lab::topology::SPOOF_V6
    );
    println!("next:");
    println!(
        "  nsenter --net=/run/netns/{} groundzero run --iface {} --pin-dir {}",
        state.node_ns,
        state.node_if,
        lab::topology::LAB_PIN_DIR
    );
    println!(
        "  nsenter --net=/run/netns/{} validator-node",
        state.node_ns
    );
    println!("  groundzero lab traffic --duration 10s");
    println!("  groundzero lab down");
    Ok(())
}

/// `lab up --nodes 2 --crowdsec`: the fleet, left running for `lab down`.
fn up_fleet(peers: u8, attackers: u8, nodes: u8) -> Result<()> {
    if nodes != 2 {
        anyhow::bail!("--crowdsec shares bans between nodes: use it with --nodes 2");
    }
    let me = std::env::current_exe().context("finding this executable")?;
    let spec = FleetSpec {
        peers,
        attackers,
        outlive: true,
        ..FleetSpec::default()
    };
    let fleet = Fleet::up(&spec, &me, None).context("building the two-node lab with CrowdSec")?;
    let url = fleet.lapi_url().to_string();
    let (pull, push) = (spec.pull_interval.clone(), spec.push_interval.clone());
    let nodes = fleet.nodes().clone();
    let state = fleet.keep().context("leaving the fleet running")?;
    println!(
        "lab is up with two nodes and a CrowdSec LAPI ({}):",
        lab::topology::STATE_FILE
    );
    for n in &nodes {
        println!(
            "  {}  {:<14} {} / {}  interface {}  daemon socket {}  pins {}",
            n.record.name,
            n.host.netns,
            n.host.v4,
            n.host.v6,
            n.host.iface,
            n.record.socket.display(),
            n.record.pin_dir.display()
        );
    }
    for h in state.peers.iter().chain(&state.attackers) {
        println!("  {:<6} {:<14} {} / {}", h.name, h.netns, h.v4, h.v6);
    }
    println!(
        "  LAPI {url} (each daemon pulls every {}, pushes every {}; configs, keys and logs in {})",
        pull,
        push,
        lab::fleet::FLEET_DIR
    );
    let a = &nodes[0];
    println!("next:");
    println!(
        "  nsenter --net=/run/netns/{} validator-node --api-socket {}",
        a.host.netns,
        a.socket().display()
    );
    println!("  groundzero lab traffic --duration 10s   (attacks node A)");
    println!(
        "  groundzero --socket {} list --source crowdsec   (what node B pulled)",
        nodes[1].socket().display()
    );
    println!("  groundzero lab down");
    Ok(())
}

fn down() -> Result<()> {
    let report = lab::down().context("removing the lab")?;
    if report.is_empty() {
        println!("no lab was up: nothing to remove");
        return Ok(());
    }
    if !report.processes.is_empty() {
        println!(
            "stopped {} process(es) inside the lab: {:?}",
            report.processes.len(),
            report.processes
        );
    }
    println!(
        "removed {} namespace(s){}",
        report.namespaces.len(),
        if report.namespaces.is_empty() {
            String::new()
        } else {
            format!(": {}", report.namespaces.join(", "))
        }
    );
    if !report.links.is_empty() {
        println!("removed stray link(s): {}", report.links.join(", "));
    }
    if !report.pins.is_empty() {
        println!(
            "removed {} pin(s) under {} (XDP detached)",
            report.pins.len(),
            lab::topology::LAB_PIN_DIR
        );
    }
    for dir in &report.dirs {
        println!("removed {}", dir.display());
    }
    if report.state_file {
        println!("removed {}", lab::topology::STATE_FILE);
    }
    Ok(())
}

fn status() -> Result<()> {
    let s = lab::status()?;
    match &s.state {
        None if s.namespaces.is_empty() => println!("no lab is up"),
        None => println!(
            "no state file, but lab namespaces exist (a crash?): {}; `groundzero lab down` removes them",
            s.namespaces.join(", ")
        ),
        Some(state) => {
            let owner = match (state.owner_pid, s.owner_alive) {
                (None, _) => "made by `groundzero lab up`".to_string(),
                (Some(pid), Some(true)) => format!("in use by process {pid}"),
                (Some(pid), _) => format!(
                    "left by process {pid}, which is gone: `groundzero lab down` removes it"
                ),
            };
            println!("lab is up, {owner}");
            println!(
                "  node {} ({} / {}) on {}; {} peer(s), {} attacker(s)",
                state.node_ns,
                state.node_v4,
                state.node_v6,
                state.node_if,
                state.peers.len(),
                state.attackers.len()
            );
            let expected = state.namespaces();
            let missing: Vec<_> = expected
                .iter()
                .filter(|n| !s.namespaces.contains(n))
                .collect();
            println!(
                "  namespaces: {} of {} present{}",
                expected.len() - missing.len(),
                expected.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing: {missing:?})")
                }
            );
            if let Some(b) = &state.node_b {
                println!(
                    "  node B {} ({} / {}) on {}",
                    b.netns, b.v4, b.v6, b.iface
                );
            }
            if let Some(fleet) = &state.fleet {
                let lapi = match fleet.lapi_pid {
                    Some(pid) if lab::topology::process_alive(pid) => format!("pid {pid}, running"),
                    Some(pid) => format!("pid {pid}, NOT running"),
                    None => "run by the lab's owner".to_string(),
                };
                println!("  CrowdSec LAPI {} ({lapi})", fleet.lapi_url);
                for n in &fleet.nodes {
                    let health = lab::harness::http::request(&n.socket, "GET", "/v1/health", None)
                        .map(|r| if r.status == 200 { "healthy".to_string() } else { format!("answers {}", r.status) })
                        .unwrap_or_else(|| "not answering".into());
                    println!(
                        "  {} daemon in {} on {}: {health}; socket {}, pins {}, log {}",
                        n.name,
                        n.netns,
                        n.iface,
                        n.socket.display(),
                        n.pin_dir.display(),
                        n.log.display()
                    );
                }
            }
        }
    }
    println!("  pins under {}: {}", lab::topology::LAB_PIN_DIR, s.pins);
    Ok(())
}

fn traffic(args: TrafficArgs) -> Result<()> {
    let lab = Lab::existing()?;
    let stop = stop_on_ctrl_c()?;
    let plan = args.plan();
    println!(
        "traffic for {}: {} peer(s) × 3 clients at {}/s; flood {} pps from {} spoofed sources, SYN {} pps, malformed {} pps, invalid {} pps",
        humantime::format_duration(plan.duration),
        lab.state().peers.len(),
        plan.legit_pps,
        plan.flood_pps,
        plan.flood_sources().len(),
        plan.syn_pps,
        plan.malformed_pps,
        plan.invalid_pps
    );
    let report = lab::run_phase(lab.state(), &plan, &stop, |_| {})
        .context("running the traffic (is the lab up? `groundzero lab status`)")?;
    print_phase("traffic", &report);
    Ok(())
}

pub fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// `98.7% (1234/1250)  p50 0.3 ms  p99 12.0 ms`
pub fn legit_line(r: &LegitReport) -> String {
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{:>6.2}% ({}/{})  p50 {}  p99 {}",
        100.0 * r.success(),
        r.answered,
        r.requests,
        ms(r.latency(0.5)),
        ms(r.latency(0.99))
    )
}

/// Each client's and each attack's numbers.
pub fn print_phase(title: &str, report: &PhaseReport) {
    println!("{title} ({:.1}s)", report.elapsed.as_secs_f64());
    for r in &report.legit {
        println!(
            "  legit  {:<3} from {:<12} {}",
            r.transport,
            r.src.map(|a| a.to_string()).unwrap_or_default(),
            legit_line(r)
        );
    }
    println!(
        "  legit  all                  {}",
        legit_line(&report.legit_total())
    );
    for a in &report.attacks {
        println!(
            "  attack {:<15} {:>8} packets in {:.1}s from {}{}",
            a.kind,
            a.sent,
            a.elapsed.as_secs_f64(),
            a.from,
            if a.errors > 0 {
                format!(" ({} refused by the kernel)", a.errors)
            } else {
                String::new()
            }
        );
    }
}
