//! `groundzero attach`: attach to interfaces with lists, print live counters, detach on Ctrl-C.
use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use groundzero::{parse_entry, AttachMode, IpNet, Shield, ShieldOptions};

use crate::{check::load_list, table};

#[derive(clap::Args)]
pub struct Args {
    /// Interface to protect (repeat for several).
    #[arg(short, long = "iface", required = true)]
    interfaces: Vec<String>,
    /// Block every address/prefix in FILE (repeatable).
    #[arg(long, value_name = "FILE")]
    blocklist: Vec<PathBuf>,
    /// Allow every address/prefix in FILE (repeatable). The allowlist wins over blocks.
    #[arg(long, value_name = "FILE")]
    allowlist: Vec<PathBuf>,
    /// Block one address or prefix (repeatable).
    #[arg(long, value_name = "ADDR|CIDR")]
    block: Vec<String>,
    /// Allow one address or prefix (repeatable).
    #[arg(long, value_name = "ADDR|CIDR")]
    allow: Vec<String>,
    /// XDP mode: native (driver), generic (skb), or auto (native, falling back to generic).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Dry run: pass everything, count what would have been dropped.
    #[arg(long)]
    monitor: bool,
    /// Seconds between counter updates.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Detach and exit after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Capacity of the exact-address blocklist, per address family.
    #[arg(long, default_value_t = ShieldOptions::default().exact_capacity)]
    exact_capacity: u32,
    /// Capacity of the prefix blocklist, per address family.
    #[arg(long, default_value_t = ShieldOptions::default().cidr_capacity)]
    cidr_capacity: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

pub fn run(args: Args) -> Result<()> {
    // Parse every input before touching the kernel: a bad line means nothing is applied.
    let (blocks, allows) = collect(&args)?;

    let options = ShieldOptions {
        exact_capacity: args.exact_capacity,
        cidr_capacity: args.cidr_capacity,
        ..ShieldOptions::default()
    };
    let mut shield = Shield::load(options).context("loading the XDP program")?;
    shield.allow_all(&allows).context("filling the allowlist")?;
    shield.block_all(&blocks).context("filling the blocklist")?;
    shield
        .set_monitor(args.monitor)
        .context("setting monitor mode")?;
    let mode = match args.mode {
        Mode::Auto => AttachMode::Auto,
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    for interface in &args.interfaces {
        // On error the shield is dropped, which detaches the interfaces already attached.
        let active = shield
            .attach(interface, mode)
            .with_context(|| format!("attaching to {interface}"))?;
        eprintln!("attached to {interface} ({active} XDP)");
    }
    eprintln!(
        "{} blocked, {} allowed{}; Ctrl-C detaches",
        blocks.len(),
        allows.len(),
        if args.monitor {
            ", MONITOR mode (nothing is dropped)"
        } else {
            ""
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let deadline = args.duration.map(|s| started + Duration::from_secs_f64(s));
    let tty = std::io::stdout().is_terminal();
    let mut previous = shield.counters()?;
    let mut previous_at = Instant::now();
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(interval.min(Duration::from_millis(100)));
        if previous_at.elapsed() < interval {
            continue;
        }
        let now = shield.counters()?;
        let text = table::render(&now, Some((&previous, previous_at.elapsed())));
        if tty {
            print!("\x1b[H\x1b[2J");
        }
        println!(
            "groundzero on {} — {:.0}s\n{text}",
            args.interfaces.join(", "),
            started.elapsed().as_secs_f64()
        );
        previous = now;
        previous_at = Instant::now();
    }
    let last = shield.counters()?;
    println!("final counters:\n{}", table::render(&last, None));
    drop(shield);
    eprintln!("detached");
    Ok(())
}

fn collect(args: &Args) -> Result<(Vec<IpNet>, Vec<IpNet>)> {
    let mut blocks = Vec::new();
    for path in &args.blocklist {
        blocks.extend(load_list(path)?);
    }
    for entry in &args.block {
        blocks.push(parse_entry(entry).with_context(|| "in --block")?);
    }
    let mut allows = Vec::new();
    for path in &args.allowlist {
        allows.extend(load_list(path)?);
    }
    for entry in &args.allow {
        allows.push(parse_entry(entry).with_context(|| "in --allow")?);
    }
    Ok((blocks, allows))
}
