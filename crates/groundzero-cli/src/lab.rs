//! `groundzero lab up|down|status|traffic`: the lab topology by hand (see `groundzero_lab`).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use groundzero_lab::{self as lab, traffic::LegitReport, Lab, LabSpec, PhasePlan, PhaseReport};

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
        LabCommand::Up { peers, attackers } => up(LabSpec { peers, attackers }),
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
