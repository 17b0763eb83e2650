//! The groundzero daemon: attaches the shield to the configured interfaces, keeps its lists
//! (with metadata, TTLs, feeds and a lockout guard), and serves the management API.
//!
//! Restarts never open a gap: maps and XDP links are pinned, so the kernel keeps filtering while
//! no daemon runs, and the next daemon swaps its program into the pinned links atomically.
//!
//! [`run`] takes the shutdown signal as a future (mini-redis style), so tests drive it directly.

pub mod config;
pub mod crowdsec_stream;
pub mod feeds;
pub mod http;
pub mod journal;
pub mod journey;
pub mod lock;
pub mod metrics;
pub mod registry;
pub mod serve;
pub mod tasks;
pub mod web;

use std::{
    future::Future,
    os::unix::fs::PermissionsExt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use config::{AttachModeConfig, ValidFeed, Validated};
use groundzero::guard::{Guard, ManagementSnapshot, Policy};
use ipnet::IpNet;
use registry::{FeedPolicy, Registry};

use groundzero::{pins, AttachMode, Shield};

/// Everything the API handlers and background tasks share.
pub struct Daemon {
    pub shield: Shield,
    /// The lists' records; every block goes through its guard.
    pub registry: Registry,
    pub config: Validated,
    /// Prefixes the XDP rate limit is told never to count (configured, protected and the
    /// management addresses, kept current by [`guard_loop`]).
    pub rate_exempt: std::collections::BTreeSet<IpNet>,
    pub started: Instant,
    /// Journey statistics and live viewers (its own lock: see [`journey::JourneyHub`]).
    pub journey: Arc<Mutex<journey::JourneyHub>>,
    /// The CrowdSec bouncer's last pulls (`[crowdsec]`; None when not configured).
    pub crowdsec: Option<tasks::crowdsec::CrowdsecStatus>,
}

pub type Shared = Arc<Mutex<Daemon>>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Shield(#[from] groundzero::Error),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
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
    let (_keep, reloads) = tokio::sync::mpsc::channel(1);
    run_with_reload(config, shutdown, reloads).await
}

/// [`run`], and each config received on `reloads` (SIGHUP in the binary) is applied without a
/// gap in filtering: guard, rate limit and feeds change in place; what cannot change while
/// running (interfaces, directories, listeners, capacities) is logged as needing a restart.
pub async fn run_with_reload(
    config: Validated,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<Validated>,
) -> Result<(), DaemonError> {
    // Before anything is touched: a second daemon on the same pins or state must not strip the
    // first one's protection, delete its feed state or take over its socket.
    let _locks = lock::acquire_all(&config)?;
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
    tasks.spawn(guard_loop(shared.clone()));
    tasks.spawn(journey::journey_loop(shared.clone(), journey_events));
    tasks.spawn(tasks::rate_bans::rate_ban_loop(shared.clone(), rate_events));
    if let Some(crowdsec) = config.crowdsec.clone() {
        tasks.spawn(tasks::crowdsec::crowdsec_loop(shared.clone(), crowdsec));
    }
    let mut feed_tasks = std::collections::BTreeMap::new();
    for feed in config.feeds.clone() {
        feed_tasks.insert(
            feed.name.clone(),
            (feed.clone(), tokio::spawn(feed_loop(shared.clone(), feed))),
        );
    }

    let max_body = config.raw.api.max_body_bytes;
    // Listeners apart from the other tasks: on shutdown they drain (bounded by
    // `Limits::drain_timeout`) instead of being aborted with the rest.
    let mut servers = tokio::task::JoinSet::new();
    let limits = config.listener_limits;
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
        let app =
            http::router(shared.clone(), Some(Arc::new(token)), max_body).merge(web::router());
        servers.spawn(serve::serve(
            "API on TCP",
            listener,
            app,
            limits,
            stopped(stop_rx.clone()),
        ));
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
        servers.spawn(serve::serve(
            "metrics",
            listener,
            crate::metrics::router_with_cache(provider, config.metrics_cache),
            limits,
            stopped(stop_rx.clone()),
        ));
        log::info!("metrics on http://{addr}/metrics");
    }

    // The Unix socket last: a daemon that answers there (what `groundzero` commands, tests and
    // scripts wait for) has every listener bound, and one that fails to bind TCP or metrics
    // never looked healthy for a moment.
    let socket = config.raw.api.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    // A socket left by a killed daemon is removed; one that answers belongs to a live daemon
    // (with other pin and state dirs, or the lock above would have said so) and is left alone.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(DaemonError::Io {
            what: format!("binding {}", socket.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon answers on this socket; give this one its own api.socket",
            ),
        });
    }
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .map_err(io(format!("binding {}", socket.display())))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", socket.display())))?;
    let app = http::router(shared.clone(), None, max_body);
    servers.spawn(serve::serve(
        "API on the unix socket",
        unix,
        app,
        limits,
        stopped(stop_rx.clone()),
    ));
    log::info!("API on {}", socket.display());

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(new) = reloads.recv() => reload(&shared, new, &mut feed_tasks).await,
        }
    }
    for (_, (_, task)) in feed_tasks {
        task.abort();
    }
    log::info!("shutting down; filtering continues through the pinned links");
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
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
        groundzero::journey::JourneyEvents,
        groundzero::ratelimit::RateEvents,
    ),
    DaemonError,
> {
    pins::ensure_bpffs()?;
    let mut shield = Shield::load(config.shield_options())?;
    if let Err(e) = shield.enable_run_stats() {
        log::warn!("kernel run-time stats for the XDP program are unavailable: {e}");
    }
    let guard = Guard::new(
        config.protected.clone(),
        config.raw.guard.protect_management,
        config.raw.guard.ssh_port,
        config.feed_hosts(),
    );
    let mut registry = Registry::open(&config.raw.state_dir, &mut shield, guard)?;
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
    let rate_exempt = wanted_rate_exempt(&config, registry.guard());
    for net in &rate_exempt {
        shield.rate_exempt(*net)?;
    }
    shield.set_rate_limit(
        config.raw.ratelimit.rate,
        config.rate_burst(),
        config.raw.ratelimit.prefix_v4,
        config.raw.ratelimit.prefix_v6,
    )?;
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
    let mut daemon = Daemon {
        shield,
        registry,
        config,
        rate_exempt,
        started: Instant::now(),
        journey: Arc::new(Mutex::new(journey::JourneyHub::new())),
        crowdsec: None,
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
fn metrics_snapshot(shared: &Shared) -> Result<crate::metrics::MetricsSnapshot, groundzero::Error> {
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
            refused: f.refused,
            name: f.name,
        })
        .collect();
    snapshot.guard_refusals = d
        .registry
        .refusal_counts()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    snapshot.journal_damage = d.registry.journal_damage().len() as u64;
    Ok(snapshot)
}

/// Once a second, removes the holds whose TTL ended, a chunk per lock hold: the API waits
/// for one chunk at most, never for all of a mass expiry.
async fn expiry_loop(shared: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = registry::now_unix();
        loop {
            let shared = shared.clone();
            let result = tokio::task::spawn_blocking(move || {
                let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
                let d = &mut *d;
                d.registry.expire(&mut d.shield, now, registry::CHUNK)
            })
            .await;
            match result {
                Ok(Ok((gone, holds))) => {
                    if gone.len() <= 20 {
                        for (side, net) in &gone {
                            log::info!("expired: {net} ({side:?})");
                        }
                    } else {
                        log::info!("expired: {} entries", gone.len());
                    }
                    if holds < registry::CHUNK {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    log::error!("expiring entries: {e}");
                    break;
                }
                Err(e) => {
                    log::error!("expiry task: {e}");
                    break;
                }
            }
        }
        compact_journal(&shared).await;
    }
}

/// Compacts the journal once it has grown well past the live set, writing the new file
/// without the daemon's lock: the API never waits for the whole set to be encoded.
async fn compact_journal(shared: &Shared) {
    let shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let started = shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .registry
            .start_compaction();
        let Some((dir, live)) = started else {
            return;
        };
        let written = journal::write_compaction(&dir, &live);
        let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
        match d.registry.finish_compaction(written, live.len()) {
            Ok(()) => log::info!("journal compacted to {} records", live.len()),
            // The old journal is whole and still in use; the next tick tries again.
            Err(e) => log::warn!("compacting the journal: {e}"),
        }
    })
    .await;
}

/// How often the guard re-reads the management addresses (own addresses, SSH peers,
/// resolvers, feed servers) and the rate limit's exempt set follows them.
pub const GUARD_REFRESH: Duration = Duration::from_secs(2);

/// The prefixes the XDP rate limit must never count: `ratelimit.exempt`, `guard.protected` and
/// the management addresses the guard last read (a spoofed flood from the admin's address must
/// not rate-drop the admin, let alone ban them).
fn wanted_rate_exempt(config: &Validated, guard: &Guard) -> std::collections::BTreeSet<IpNet> {
    config
        .rate_exempt
        .iter()
        .chain(&config.protected)
        .copied()
        .chain(guard.management_addresses())
        .collect()
}

/// Keeps the guard's view of the management addresses current, off the daemon's lock, and the
/// kernel's rate-limit exemptions in step with it.
async fn guard_loop(shared: Shared) {
    let mut tick = tokio::time::interval(GUARD_REFRESH);
    loop {
        tick.tick().await;
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let inputs = shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry
                .guard()
                .refresh_inputs();
            let snapshot = inputs.map(|(port, hosts)| ManagementSnapshot::read(port, &hosts));
            let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(snapshot) = snapshot {
                d.registry.guard_mut().install(snapshot);
            }
            sync_rate_exempt(&mut d);
        })
        .await;
    }
}

/// Brings the kernel's rate-limit exemptions to what the config and the guard want.
fn sync_rate_exempt(d: &mut Daemon) {
    let wanted = wanted_rate_exempt(&d.config, d.registry.guard());
    for net in wanted.difference(&d.rate_exempt.clone()) {
        match d.shield.rate_exempt(*net) {
            Ok(()) => {
                d.rate_exempt.insert(*net);
            }
            Err(e) => log::warn!("rate limit: exempting {net}: {e}"),
        }
    }
    for net in d.rate_exempt.clone().difference(&wanted) {
        match d.shield.rate_unexempt(*net) {
            Ok(_) => {
                d.rate_exempt.remove(net);
            }
            Err(e) => log::warn!("rate limit: ending the exemption of {net}: {e}"),
        }
    }
}

/// Applies a new config (SIGHUP): guard, rate limit and feeds change in place, with filtering
/// never interrupted. Settings that need a restart are named in the log.
async fn reload(
    shared: &Shared,
    new: Validated,
    feed_tasks: &mut std::collections::BTreeMap<String, (ValidFeed, tokio::task::JoinHandle<()>)>,
) {
    let applied = {
        let shared = shared.clone();
        let new = new.clone();
        tokio::task::spawn_blocking(move || -> Result<(), DaemonError> {
            let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
            let d = &mut *d;
            let old = &d.config.raw;
            for (what, changed) in [
                ("interfaces", old.interfaces != new.raw.interfaces),
                ("attach_mode", old.attach_mode != new.raw.attach_mode),
                ("pin_dir", old.pin_dir != new.raw.pin_dir),
                ("state_dir", old.state_dir != new.raw.state_dir),
                (
                    "api",
                    format!("{:?}", old.api) != format!("{:?}", new.raw.api),
                ),
                (
                    "metrics",
                    format!("{:?}", old.metrics) != format!("{:?}", new.raw.metrics),
                ),
                (
                    "capacity",
                    format!("{:?}", old.capacity) != format!("{:?}", new.raw.capacity),
                ),
                (
                    "journey",
                    format!("{:?}", old.journey) != format!("{:?}", new.raw.journey),
                ),
                (
                    "crowdsec",
                    format!("{:?}", old.crowdsec) != format!("{:?}", new.raw.crowdsec),
                ),
            ] {
                if changed {
                    log::warn!("reload: `{what}` changed; it takes effect at the next restart");
                }
            }
            d.registry.guard_mut().reconfigure(
                new.protected.clone(),
                new.raw.guard.protect_management,
                new.raw.guard.ssh_port,
                new.feed_hosts(),
            );
            if new.raw.monitor != old.monitor {
                d.shield.set_monitor(new.raw.monitor)?;
            }
            d.shield.set_rate_limit(
                new.raw.ratelimit.rate,
                new.rate_burst(),
                new.raw.ratelimit.prefix_v4,
                new.raw.ratelimit.prefix_v6,
            )?;
            let keep: Vec<String> = new
                .feeds
                .iter()
                .map(|f| f.name.clone())
                .chain(
                    d.registry
                        .feed_statuses()
                        .into_iter()
                        .filter(|f| f.url == "api import")
                        .map(|f| f.name),
                )
                .collect();
            d.registry.retain_feeds(&mut d.shield, &keep)?;
            // What only the running config knows stays; the rest is the new file.
            let mut merged = new;
            merged.raw.interfaces = d.config.raw.interfaces.clone();
            merged.raw.attach_mode = d.config.raw.attach_mode;
            merged.raw.pin_dir = d.config.raw.pin_dir.clone();
            merged.raw.state_dir = d.config.raw.state_dir.clone();
            merged.raw.api = d.config.raw.api.clone();
            merged.raw.metrics = d.config.raw.metrics.clone();
            merged.raw.capacity = d.config.raw.capacity.clone();
            merged.raw.journey = d.config.raw.journey.clone();
            merged.tcp_listen = d.config.tcp_listen;
            merged.metrics_listen = d.config.metrics_listen;
            merged.journey_filter = d.config.journey_filter;
            d.config = merged;
            sync_rate_exempt(d);
            Ok(())
        })
        .await
    };
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::error!("reload: {e}; the earlier settings stay where they were not yet applied");
            return;
        }
        Err(e) => {
            log::error!("reload task: {e}");
            return;
        }
    }
    // Feeds: stop those that went or changed, start those that are new or changed. A changed
    // feed keeps its entries in force until its first refresh replaces them.
    let wanted: std::collections::BTreeMap<String, ValidFeed> = new
        .feeds
        .iter()
        .map(|f| (f.name.clone(), f.clone()))
        .collect();
    feed_tasks.retain(|name, (feed, task)| {
        let keep = wanted.get(name).is_some_and(|w| w == feed);
        if !keep {
            task.abort();
        }
        keep
    });
    for (name, feed) in wanted {
        feed_tasks
            .entry(name)
            .or_insert_with(|| (feed.clone(), tokio::spawn(feed_loop(shared.clone(), feed))));
    }
    log::info!("reload: configuration applied");
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
            .and_then(|text| feeds::parse_feed(&text, feed.format, &format!("feed {}", feed.name)));
        let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut *d;
        let policy = FeedPolicy {
            guard: Policy {
                force: false,
                allow_wide: feed.allow_wide,
            },
            max_change: Some(feed.max_change),
        };
        let outcome = match fetched {
            Ok(parsed) => d
                .registry
                .replace_feed(
                    &mut d.shield,
                    &feed.name,
                    &feed.url,
                    feed.format,
                    &parsed,
                    policy,
                )
                .map(|(added, removed)| (parsed.nets.len(), added, removed))
                .map_err(|e| {
                    let refused = matches!(e, registry::RegistryError::FeedRefused { .. });
                    (e.to_string(), refused)
                }),
            Err(e) => Err((e.to_string(), false)),
        };
        match outcome {
            Ok((entries, added, removed)) => {
                log::info!(
                    "feed {}: {entries} entries (+{added} -{removed})",
                    feed.name
                )
            }
            Err((error, refused)) => {
                log::warn!(
                    "feed {}: refresh failed, keeping the previous set: {}",
                    feed.name,
                    groundzero::text::for_terminal(&error)
                );
                d.registry
                    .feed_failed(&feed.name, &feed.url, feed.format, error, refused);
            }
        }
    })
    .await;
}
