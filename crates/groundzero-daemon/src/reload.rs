//! SIGHUP: a new configuration applied while running, with filtering never interrupted. What
//! cannot change in place (interfaces, directories, listeners, capacities) is named in the log
//! as needing a restart.

use std::collections::BTreeMap;

use crate::{
    config::{ValidFeed, Validated},
    error::DaemonError,
    state::Shared,
    stop::Stop,
    tasks::{feeds::feed_loop, guard::sync_rate_exempt},
};

/// The running feed tasks by feed name, with the configuration each runs with.
pub(crate) type FeedTasks = BTreeMap<String, (ValidFeed, tokio::task::JoinHandle<()>)>;

/// Applies a new config (SIGHUP): guard, rate limit and feeds change in place, with filtering
/// never interrupted. Settings that need a restart are named in the log.
pub(crate) async fn reload(
    shared: &Shared,
    new: Validated,
    feed_tasks: &mut FeedTasks,
    stop: &Stop,
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
                        .filter(|f| f.is_import())
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
    let wanted: BTreeMap<String, ValidFeed> = new
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
        feed_tasks.entry(name).or_insert_with(|| {
            let task = tokio::spawn(feed_loop(shared.clone(), feed.clone(), stop.clone()));
            (feed, task)
        });
    }
    log::info!("reload: configuration applied");
}
