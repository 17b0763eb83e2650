//! `groundzero run`, `check-config` and `cleanup`.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use groundzero::pins;
use groundzero_api::client::{Client, Endpoint};
use groundzero_daemon::{self as daemon, config::Validated};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The TOML config (see deploy/groundzero.toml for every field and its default).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Interface to protect (repeatable); replaces `interfaces` from the config.
    #[arg(long = "iface")]
    interfaces: Vec<String>,
    /// Overrides state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides pin_dir.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Overrides monitor.
    #[arg(long)]
    monitor: Option<bool>,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The TOML config to validate.
    file: PathBuf,
}

#[derive(clap::Args)]
pub struct CleanupArgs {
    /// The pin directory to remove.
    #[arg(long, default_value = pins::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Also delete the journal and feed caches in this state directory.
    #[arg(long)]
    purge_state: Option<PathBuf>,
}

/// The config file (or the defaults) with the command line's overrides applied.
fn load_config(args: &RunArgs, socket: Option<&PathBuf>) -> Result<Validated> {
    let mut config = match &args.config {
        Some(path) => Validated::load(path)?,
        None => Validated::parse("", std::path::Path::new("(defaults)"))?,
    };
    if !args.interfaces.is_empty() {
        config.raw.interfaces = args.interfaces.clone();
    }
    if let Some(s) = socket {
        config.raw.api.socket = s.clone();
    }
    if let Some(s) = &args.state_dir {
        config.raw.state_dir = s.clone();
    }
    if let Some(p) = &args.pin_dir {
        config.raw.pin_dir = p.clone();
    }
    if let Some(m) = args.monitor {
        config.raw.monitor = m;
    }
    Ok(config)
}

pub fn run(args: RunArgs, socket: Option<PathBuf>) -> Result<()> {
    let config = load_config(&args, socket.as_ref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        // SIGHUP reloads the config (as `systemctl reload` sends it): without a handler it
        // would end the daemon.
        let mut hup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match load_config(&args, socket.as_ref()) {
                    Ok(config) => {
                        log::info!("SIGHUP: reloading the configuration");
                        if reload_tx.send(config).await.is_err() {
                            return;
                        }
                    }
                    // A bad edit must not take down a running shield: keep what runs.
                    Err(e) => log::error!("SIGHUP: not reloaded, the running config stays: {e:#}"),
                }
            }
        });
        daemon::run_with_reload(config, shutdown, reload_rx)
            .await
            .context("groundzero daemon")
    })
}

pub fn check(args: CheckArgs) -> Result<()> {
    let c = Validated::load(&args.file)?;
    println!("{}: OK", args.file.display());
    println!(
        "  interfaces: {}",
        if c.raw.interfaces.is_empty() {
            "(none)".into()
        } else {
            c.raw.interfaces.join(", ")
        }
    );
    println!(
        "  attach mode: {:?}, monitor: {}",
        c.raw.attach_mode, c.raw.monitor
    );
    println!(
        "  pins: {}, state: {}",
        c.raw.pin_dir.display(),
        c.raw.state_dir.display()
    );
    println!(
        "  API: {}{}",
        c.raw.api.socket.display(),
        c.tcp_listen
            .map(|a| format!(" and http://{a} (token)"))
            .unwrap_or_default()
    );
    println!(
        "  metrics: {}",
        c.metrics_listen
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "off".into())
    );
    println!(
        "  capacity: exact {}, prefix {}, allow {} (per family)",
        c.raw.capacity.exact, c.raw.capacity.cidr, c.raw.capacity.allow
    );
    println!(
        "  protected: {} prefix(es), management addresses {}",
        c.protected.len(),
        if c.raw.guard.protect_management {
            "protected"
        } else {
            "not protected"
        }
    );
    for f in &c.feeds {
        println!(
            "  feed {}: {} ({:?}, every {})",
            f.name,
            f.url,
            f.format,
            humantime::format_duration(f.refresh)
        );
    }
    Ok(())
}

/// Refuses while a daemon answers on `socket`.
pub fn cleanup(args: CleanupArgs, socket: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(Endpoint::Unix(socket.clone()));
    if runtime
        .block_on(client.call(hyper::Method::GET, "/v1/health", None))
        .is_ok()
    {
        bail!(
            "a daemon answers on {}: stop it first (cleanup would pull the rug from under it)",
            socket.display()
        );
    }
    let removed = pins::remove_all(&args.pin_dir)?;
    println!(
        "removed {} pin(s) under {}; XDP is detached from every interface it held",
        removed.len(),
        args.pin_dir.display()
    );
    if let Some(state) = args.purge_state {
        for p in [
            state.join(groundzero_daemon::journal::FILE_NAME),
            state.join(groundzero_daemon::journal::LEGACY_FILE_NAME),
            state.join("feeds"),
        ] {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            } else if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        println!("removed the journal and feed caches in {}", state.display());
    }
    Ok(())
}
