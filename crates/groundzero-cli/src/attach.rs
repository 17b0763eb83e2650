//! `groundzero attach`: attach to interfaces with lists, print live counters, detach on Ctrl-C.
//! With `--metrics-listen`, also serve Prometheus metrics read from the maps at each scrape.
use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use groundzero::{
    guard::{Guard, Policy},
    parse_entry, AttachMode, IpNet, Shield, ShieldOptions,
};
use groundzero_daemon::metrics::{self, MetricsSnapshot, SnapshotProvider};

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
    /// Apply blocks the lockout guard refuses (this host's addresses, SSH peers, resolvers,
    /// the allowlist, prefixes wider than /8 or /32).
    #[arg(long)]
    force: bool,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477). Also turns on the
    /// kernel's BPF run-time stats, so the program's cost per packet can be graphed.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
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
    // The same lockout guard as the daemon's, before anything is loaded: a list must not lock
    // out the operator running this command.
    if !args.force {
        let guard = Guard::new(Vec::new(), true, 22, Vec::new());
        let refusals: Vec<String> = blocks
            .iter()
            .filter_map(|b| guard.check(b, &allows, Policy::STRICT).err())
            .map(|r| r.to_string())
            .collect();
        if !refusals.is_empty() {
            bail!(
                "the lockout guard refused {} block(s), nothing applied (--force applies them):\n  {}",
                refusals.len(),
                refusals.join("\n  ")
            );
        }
    }
    // Bind before touching the kernel too: a port in use is reported before anything changes.
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };

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

    if metrics_listener.is_some() {
        if let Err(e) = shield.enable_run_stats() {
            eprintln!("warning: no XDP run-time stats (groundzero_xdp_* stay 0): {e}");
        }
    }
    // Shared with the metrics server, which reads the maps at each scrape.
    let shield = Arc::new(Mutex::new(shield));
    let server = match metrics_listener {
        Some(listener) => Some(MetricsServer::start(listener, shield.clone())?),
        None => None,
    };

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
    let mut previous = lock(&shield).counters()?;
    let mut previous_at = Instant::now();
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(interval.min(Duration::from_millis(100)));
        if previous_at.elapsed() < interval {
            continue;
        }
        let now = lock(&shield).counters()?;
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
    let last = lock(&shield).counters()?;
    println!("final counters:\n{}", table::render(&last, None));
    if let Some(server) = server {
        server.stop();
    }
    // The server is gone, so this is the last reference: dropping the shield detaches it.
    drop(shield);
    eprintln!("detached");
    Ok(())
}

/// The shield, even if a scrape panicked while holding it (reading maps leaves nothing
/// half-done).
fn lock(shield: &Mutex<Shield>) -> MutexGuard<'_, Shield> {
    shield
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `/metrics` server, on a small tokio runtime in its own thread so the live table keeps its
/// plain loop.
struct MetricsServer {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    fn start(listener: std::net::TcpListener, shield: Arc<Mutex<Shield>>) -> Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let provider: SnapshotProvider =
            Arc::new(move || MetricsSnapshot::from_shield(&lock(&shield), metrics::DEFAULT_TOP_N));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the metrics server's runtime")?;
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    // The daemon's listener limits: timeouts, a connection cap, a bounded drain.
                    groundzero_daemon::serve::serve(
                        "metrics",
                        listener,
                        metrics::router(provider),
                        groundzero_daemon::serve::Limits::default(),
                        async {
                            let _ = shutdown_rx.await;
                        },
                    )
                    .await;
                    Ok(())
                });
                if let Err(e) = &result {
                    eprintln!("warning: the metrics server stopped: {e}");
                }
                result
            })
            .context("starting the metrics server's thread")?;
        eprintln!("metrics on http://{addr}/metrics");
        Ok(MetricsServer { shutdown, thread })
    }

    /// Stops accepting scrapes, lets one in flight finish, and waits for the thread.
    fn stop(self) {
        let _ = self.shutdown.send(());
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {} // already reported when it stopped
            Err(_) => eprintln!("warning: the metrics server panicked"),
        }
    }
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
