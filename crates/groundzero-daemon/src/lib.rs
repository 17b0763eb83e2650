//! The groundzero daemon: attaches the shield to the configured interfaces, keeps its lists
//! (with metadata, TTLs, feeds and a lockout guard), and serves the management API.
//!
//! Restarts never open a gap: maps and XDP links are pinned, so the kernel keeps filtering while
//! no daemon runs, and the next daemon swaps its program into the pinned links atomically.
//!
//! [`run`] takes the shutdown signal as a future (mini-redis style), so tests drive it directly.
//!
//! Where things are: the shared state is [`state`] ([`Daemon`] behind one lock); the lists'
//! records are [`registry`] with its [`journal`] (both on [`records`]); [`http`] holds the
//! handlers, [`serve`] the one accept loop every listener uses, [`tasks`] the background loops
//! (expiry, guard, feeds, rate bans, journey drain, the CrowdSec bouncer), [`metrics`] the Prometheus side. This file
//! only wires them: start-up, listeners, reloads and shutdown.

pub mod config;
pub mod crowdsec_push;
pub mod crowdsec_stream;
mod error;
pub mod feeds;
pub mod http;
pub mod journal;
pub mod journey;
mod journey_ops;
mod lapi_http;
mod listeners;
pub mod lock;
pub mod metrics;
pub mod pcapng;
pub mod records;
pub mod registry;
mod reload;
pub mod serve;
mod state;
pub mod stop;
pub mod tasks;
pub mod web;
pub mod wire;

pub use error::DaemonError;
pub use state::{Daemon, Shared};

// The handlers' path to a feed refresh (`POST /v1/feeds/{name}/refresh`); it lives with the
// feed task now.
pub(crate) use tasks::feeds::refresh_feed;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Instant,
};

use config::{AttachModeConfig, Validated};
use groundzero::guard::Guard;
use registry::Registry;
use stop::{Stop, StopHandle};

use groundzero::{pins, AttachMode, Shield};

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

    // Every background task and listener stops on this one signal.
    let (stop_handle, stop) = Stop::new();
    let mut background = tokio::task::JoinSet::new();
    background.spawn(tasks::expiry::expiry_loop(shared.clone(), stop.clone()));
    background.spawn(tasks::guard::guard_loop(shared.clone(), stop.clone()));
    background.spawn(tasks::journey::journey_loop(
        shared.clone(),
        journey_events,
        stop.clone(),
    ));
    background.spawn(tasks::rate_bans::rate_ban_loop(
        shared.clone(),
        rate_events,
        stop.clone(),
    ));
    // The CrowdSec bouncer and watcher apart: SIGHUP restarts them with a changed `[crowdsec]`.
    let mut crowdsec = reload::CrowdsecTasks::default();
    crowdsec.reconcile(&shared, &config, &stop).await;
    let mut feed_tasks = BTreeMap::new();
    for feed in config.feeds.clone() {
        let task = tokio::spawn(tasks::feeds::feed_loop(
            shared.clone(),
            feed.clone(),
            stop.clone(),
        ));
        feed_tasks.insert(feed.name.clone(), (feed, task));
    }

    // Listeners apart from the other tasks: on shutdown they stop accepting and drain (bounded
    // by `Limits::drain_timeout`) while the tasks finish the step they are in.
    let (servers, socket) = match listeners::serve_all(&config, &shared, &stop).await {
        Ok(bound) => bound,
        Err(e) => {
            // Nothing may go on writing after `run` returns (the locks are released then).
            let drain = config.listener_limits.drain_timeout;
            let none = tokio::task::JoinSet::new();
            background.spawn(crowdsec.join());
            stop_everything(&shared, stop_handle, none, background, feed_tasks, drain).await;
            return Err(e);
        }
    };

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(new) = reloads.recv() => {
                reload::reload(&shared, new, &mut feed_tasks, &mut crowdsec, &stop).await
            }
        }
    }
    log::info!("shutting down; filtering continues through the pinned links");
    // Joined with the other background tasks (they stop on the same signal).
    background.spawn(crowdsec.join());
    stop_everything(
        &shared,
        stop_handle,
        servers,
        background,
        feed_tasks,
        config.listener_limits.drain_timeout,
    )
    .await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Shutdown: listeners stop accepting and drain (each bounded by `drain_timeout`), background
/// tasks finish the step they are in (also bounded, then aborted), and any change a handler
/// handed to a blocking thread has written its journal record before this returns.
async fn stop_everything(
    shared: &Shared,
    stop: StopHandle,
    mut servers: tokio::task::JoinSet<()>,
    mut background: tokio::task::JoinSet<()>,
    feed_tasks: reload::FeedTasks,
    drain_timeout: std::time::Duration,
) {
    stop.stop();
    while servers.join_next().await.is_some() {}
    let feed_aborts: Vec<_> = feed_tasks.values().map(|(_, t)| t.abort_handle()).collect();
    let joined = tokio::time::timeout(drain_timeout, async {
        while background.join_next().await.is_some() {}
        for (_, (_, task)) in feed_tasks {
            // A JoinError here is a panic, which the panic hook has already reported.
            let _ = task.await;
        }
    })
    .await;
    if joined.is_err() {
        log::warn!("background tasks still busy after {drain_timeout:?}: stopping them");
        feed_aborts.iter().for_each(|a| a.abort());
        background.shutdown().await;
    }
    // The journal is written (and fsync'd) under the daemon's lock: once the lock is ours,
    // every write begun by a request or a task has reached the disk.
    let shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || drop(shared.lock())).await;
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
    registry.set_push(config.crowdsec_push.as_ref());
    let feed_names: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    // Imports are feeds with no configuration: keep those that have a cache.
    let mut keep = feed_names.clone();
    keep.extend(
        registry
            .feed_statuses()
            .into_iter()
            .filter(|f| f.is_import())
            .map(|f| f.name),
    );
    registry.retain_feeds(&mut shield, &keep)?;
    shield.set_monitor(config.raw.monitor)?;
    // The config map is pinned: what an earlier daemon set (sampling, rate) must not linger.
    shield.set_sampling(0, Default::default())?;
    let rate_exempt = tasks::guard::wanted_rate_exempt(&config, registry.guard());
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
        let status = journey_ops::start_tracing(&mut daemon, every, filter)?;
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
