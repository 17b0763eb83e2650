//! The groundzero daemon: attaches the shield to the configured interfaces, keeps its lists
//! (with metadata, TTLs, feeds and a lockout guard), and serves the management API.
//!
//! Restarts never open a gap: maps and XDP links are pinned, so the kernel keeps filtering while
//! no daemon runs, and the next daemon swaps its program into the pinned links atomically.
//!
//! [`run`] takes the shutdown signal as a future (mini-redis style), so tests drive it directly.

pub mod api;
pub mod config;
pub mod feeds;
pub mod guard;
pub mod journal;
pub mod journey;
pub mod registry;
pub mod web;

use std::{
    future::Future,
    os::unix::fs::PermissionsExt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use config::{AttachModeConfig, ValidFeed, Validated};
use guard::Guard;
use registry::Registry;

use crate::{pins, AttachMode, Shield};

/// Everything the API handlers and background tasks share.
pub struct Daemon {
    pub shield: Shield,
    pub registry: Registry,
    pub guard: Guard,
    pub config: Validated,
    pub started: Instant,
    /// Journey statistics and live viewers (its own lock: see [`journey::JourneyHub`]).
    pub journey: Arc<Mutex<journey::JourneyHub>>,
}

pub type Shared = Arc<Mutex<Daemon>>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Shield(#[from] crate::Error),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Sets everything up, serves until `shutdown` completes, then stops serving. Filtering goes on
/// after return (pinned); `groundzero cleanup` removes it.
pub async fn run(config: Validated, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let (state, journey_events, rate_events) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || start(config)
    })
    .await
    .map_err(|e| DaemonError::Io {
        what: "starting".into(),
        source: std::io::Error::other(e),
    })??;
    let shared: Shared = Arc::new(Mutex::new(state));

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(expiry_loop(shared.clone()));
    tasks.spawn(journey::journey_loop(shared.clone(), journey_events));
    tasks.spawn(journey::rate_ban_loop(shared.clone(), rate_events));
    for feed in config.feeds.clone() {
        tasks.spawn(feed_loop(shared.clone(), feed));
    }

    let max_body = config.raw.api.max_body_bytes;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    if let (Some(addr), Some(token_file)) = (config.tcp_listen, &config.raw.api.token_file) {
        let token = std::fs::read_to_string(token_file)
            .map_err(io(format!(
                "reading api.token_file {}",
                token_file.display()
            )))?
            .trim()
            .to_string();
        if token.len() < 16 {
            return Err(DaemonError::Io {
                what: format!("api.token_file {}", token_file.display()),
                source: std::io::Error::other("the token must be at least 16 characters"),
            });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding {addr}")))?;
        // The journey page rides on the TCP listener; merged after the token layer, so its
        // static assets load without the token and the API it calls still needs it.
        let app = api::router(shared.clone(), Some(Arc::new(token)), max_body).merge(web::router());
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                log::error!("API on TCP failed: {e}");
            }
        });
        log::info!("API and journey page on http://{addr}/ (bearer token required for the API)");
    }

    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io(format!("binding metrics.listen {addr}")))?;
        let provider: crate::metrics::SnapshotProvider = {
            let shared = shared.clone();
            Arc::new(move || metrics_snapshot(&shared))
        };
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, crate::metrics::router(provider))
                .with_graceful_shutdown(stop)
                .await
            {
                log::error!("metrics listener failed: {e}");
            }
        });
        log::info!("metrics on http://{addr}/metrics");
    }

    // The Unix socket last: a daemon that answers there (what `groundzero` commands, tests and
    // scripts wait for) has every listener bound, and one that fails to bind TCP or metrics
    // never looked healthy for a moment.
    let socket = config.raw.api.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let _ = std::fs::remove_file(&socket); // a stale socket from a killed daemon
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(io(format!("binding {}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", socket.display())))?;
    let app = api::router(shared.clone(), None, max_body);
    tasks.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            if let Err(e) = axum::serve(unix, app).with_graceful_shutdown(stop).await {
                log::error!("API on the unix socket failed: {e}");
            }
        }
    });
    log::info!("API on {}", socket.display());

    shutdown.await;
    log::info!("shutting down; filtering continues through the pinned links");
    let _ = stop_tx.send(true);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The blocking part of start-up: load (adopting pins), reconcile lists, attach; set up the
/// rate limit and journey tracing as configured.
fn start(
    config: Validated,
) -> Result<
    (
        Daemon,
        crate::journey::JourneyEvents,
        crate::ratelimit::RateEvents,
    ),
    DaemonError,
> {
    pins::ensure_bpffs()?;
    let mut shield = Shield::load(config.shield_options())?;
    if let Err(e) = shield.enable_run_stats() {
        log::warn!("kernel run-time stats for the XDP program are unavailable: {e}");
    }
    let mut registry = Registry::open(&config.raw.state_dir, &mut shield)?;
    let feed_names: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    // Imports are feeds with no configuration: keep those that have a cache.
    let mut keep = feed_names.clone();
    keep.extend(
        registry
            .feed_statuses()
            .into_iter()
            .filter(|f| f.url == "api import")
            .map(|f| f.name),
    );
    registry.retain_feeds(&mut shield, &keep)?;
    shield.set_monitor(config.raw.monitor)?;
    // The config map is pinned: what an earlier daemon set (sampling, rate) must not linger.
    shield.set_sampling(0, Default::default())?;
    for net in config.rate_exempt.iter().chain(&config.protected) {
        shield.rate_exempt(*net)?;
    }
    shield.set_rate_limit(config.raw.ratelimit.rate, config.rate_burst(), 32, 64)?;
    let journey_events = shield.journey_events()?;
    let rate_events = shield.rate_events()?;

    // Interfaces pinned by an earlier daemon but no longer configured stop being filtered.
    for (interface, _) in pins::pinned_interfaces(&config.raw.pin_dir) {
        if !config.raw.interfaces.contains(&interface) {
            log::info!("{interface} is no longer configured: detaching");
            let _ = pins::unpin_link(&config.raw.pin_dir, &interface);
        }
    }
    let mode = match config.raw.attach_mode {
        AttachModeConfig::Auto => AttachMode::Auto,
        AttachModeConfig::Native => AttachMode::Native,
        AttachModeConfig::Generic => AttachMode::Generic,
    };
    for interface in &config.raw.interfaces {
        let active = shield.attach(interface, mode)?;
        let adopted = shield.attachments().last().is_some_and(|a| a.adopted);
        log::info!(
            "{interface}: {active} XDP{}",
            if adopted {
                " (adopted the pinned link, no gap)"
            } else {
                ""
            }
        );
    }
    let guard = Guard::new(
        config.protected.clone(),
        config.raw.guard.protect_management,
        config.raw.guard.ssh_port,
    );
    let mut daemon = Daemon {
        shield,
        registry,
        guard,
        config,
        started: Instant::now(),
        journey: Arc::new(Mutex::new(journey::JourneyHub::new())),
    };
    if daemon.config.raw.journey.enabled {
        let every = *daemon.config.raw.journey.sample_every.get_ref();
        let filter = daemon.config.journey_filter;
        let status = journey::start_tracing(&mut daemon, every, filter)?;
        log::info!(
            "journey tracing: 1 in {every} packets ({}){}",
            status.filter,
            if status.stages_missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; not observable here: {}",
                    status
                        .stages_missing
                        .iter()
                        .map(|m| m.hook)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    Ok((daemon, journey_events, rate_events))
}

/// What the shield knows, plus the registry's view: entries by source, and feed status.
fn metrics_snapshot(shared: &Shared) -> Result<crate::metrics::MetricsSnapshot, crate::Error> {
    use crate::metrics::{
        AddressFamily, FeedStatus, ListCount, ListSide, MetricsSnapshot, DEFAULT_TOP_N,
    };
    // The lists (a million entries take about a second to read) are read through the
    // reader's own map fds with the lock released, so a scrape never stalls the API.
    let reader = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .shield
        .list_reader()?;
    let (blocked, allowed) = (reader.blocked()?, reader.allowed()?);
    let d = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut snapshot =
        MetricsSnapshot::from_shield_and_lists(&d.shield, &blocked, &allowed, DEFAULT_TOP_N)?;
    snapshot.journey = Some(crate::metrics::JourneyHistograms(
        d.journey
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .histograms
            .clone(),
    ));
    snapshot.lists = d
        .registry
        .counts()
        .into_iter()
        .map(|((side, source, family), entries)| ListCount {
            list: match side {
                registry::Side::Block => ListSide::Block,
                registry::Side::Allow => ListSide::Allow,
            },
            family: if family == "ipv4" {
                AddressFamily::Ipv4
            } else {
                AddressFamily::Ipv6
            },
            // The source's kind only (`feed`, `app`, ...): names stay out of this label.
            source,
            entries,
        })
        .collect();
    snapshot.feeds = d
        .registry
        .feed_statuses()
        .into_iter()
        .map(|f| FeedStatus {
            refresh_interval_seconds: d
                .config
                .feeds
                .iter()
                .find(|c| c.name == f.name)
                .map(|c| c.refresh.as_secs_f64()),
            ok: f.error.is_none() && f.last_success.is_some(),
            last_success_unix: f.last_success.map(|t| t as f64),
            entries: f.entries as u64,
            name: f.name,
        })
        .collect();
    Ok(snapshot)
}

async fn expiry_loop(shared: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let shared = shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
            let d = &mut *d;
            d.registry.expire(&mut d.shield, registry::now_unix())
        })
        .await;
        match result {
            Ok(Ok(gone)) => {
                for (side, net) in gone {
                    log::info!("expired: {net} ({side:?})");
                }
            }
            Ok(Err(e)) => log::error!("expiring entries: {e}"),
            Err(e) => log::error!("expiry task: {e}"),
        }
    }
}

async fn feed_loop(shared: Shared, feed: ValidFeed) {
    loop {
        refresh_feed(&shared, &feed).await;
        tokio::time::sleep(feed.refresh).await;
    }
}

/// Fetches, parses and applies one feed; on any failure the old set stays and the status says why.
pub async fn refresh_feed(shared: &Shared, feed: &ValidFeed) {
    let shared = shared.clone();
    let feed = feed.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let fetched = feeds::fetch(&feed.url, Duration::from_secs(60))
            .and_then(|text| feeds::parse_feed(&text, feed.format, &feed.url));
        let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut *d;
        let outcome = match fetched {
            Ok(parsed) => d
                .registry
                .replace_feed(&mut d.shield, &feed.name, &feed.url, feed.format, &parsed)
                .map(|(added, removed)| (parsed.nets.len(), added, removed))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((entries, added, removed)) => {
                log::info!(
                    "feed {}: {entries} entries (+{added} -{removed})",
                    feed.name
                )
            }
            Err(error) => {
                log::warn!(
                    "feed {}: refresh failed, keeping the previous set: {error}",
                    feed.name
                );
                d.registry
                    .feed_failed(&feed.name, &feed.url, feed.format, error);
            }
        }
    })
    .await;
}
