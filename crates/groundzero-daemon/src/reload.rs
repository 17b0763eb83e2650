//! SIGHUP: a new configuration applied while running, with filtering never interrupted. What
//! cannot change in place (interfaces, directories, listeners, capacities) is named in the log
//! as needing a restart. `[crowdsec]` (pull and push) changes in place: its tasks restart with
//! the new settings, the entries they hold stay in force. A file that does not validate never
//! gets here (the binary logs it and the running config stays).

use std::collections::BTreeMap;

use crate::{
    config::{ValidCrowdsec, ValidFeed, ValidPush, Validated},
    error::DaemonError,
    state::Shared,
    stop::Stop,
    tasks::{
        crowdsec::crowdsec_loop, crowdsec_push::push_loop, feeds::feed_loop,
        guard::sync_rate_exempt,
    },
};

/// The running feed tasks by feed name, with the configuration each runs with.
pub(crate) type FeedTasks = BTreeMap<String, (ValidFeed, tokio::task::JoinHandle<()>)>;

/// The CrowdSec bouncer (pull) and watcher (push) tasks, with the configuration each runs with.
#[derive(Default)]
pub(crate) struct CrowdsecTasks {
    pull: Option<(ValidCrowdsec, tokio::task::JoinHandle<()>)>,
    push: Option<(ValidPush, tokio::task::JoinHandle<()>)>,
}

impl CrowdsecTasks {
    /// Stops what `config` no longer wants or wants otherwise, starts what is new or changed.
    /// A restarted bouncer begins with a startup pull, which converges on the LAPI's set
    /// without dropping what it held (unchanged holds are not rewritten); a restarted watcher
    /// keeps its queue (it lives in the registry).
    pub(crate) fn reconcile(&mut self, shared: &Shared, config: &Validated, stop: &Stop) {
        if self.pull.as_ref().map(|(c, _)| c) != config.crowdsec.as_ref() {
            if let Some((_, task)) = self.pull.take() {
                task.abort();
            }
            if let Some(c) = config.crowdsec.clone() {
                let task = tokio::spawn(crowdsec_loop(shared.clone(), c.clone(), stop.clone()));
                self.pull = Some((c, task));
            } else {
                let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
                d.crowdsec = None;
            }
        }
        if self.push.as_ref().map(|(c, _)| c) != config.crowdsec_push.as_ref() {
            if let Some((_, task)) = self.push.take() {
                task.abort();
            }
            if let Some(c) = config.crowdsec_push.clone() {
                let task = tokio::spawn(push_loop(shared.clone(), c.clone(), stop.clone()));
                self.push = Some((c, task));
            }
        }
    }

    /// Waits for both tasks (after the stop signal they finish the step they are in).
    pub(crate) async fn join(self) {
        let pull = self.pull.map(|(_, t)| t);
        let push = self.push.map(|(_, t)| t);
        for task in [pull, push].into_iter().flatten() {
            // A JoinError here is a panic (reported by the panic hook) or an abort.
            let _ = task.await;
        }
    }
}

/// Applies a new config (SIGHUP): guard, rate limit and feeds change in place, with filtering
/// never interrupted. Settings that need a restart are named in the log.
pub(crate) async fn reload(
    shared: &Shared,
    new: Validated,
    feed_tasks: &mut FeedTasks,
    crowdsec: &mut CrowdsecTasks,
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
            d.registry.set_push(d.config.crowdsec_push.as_ref());
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
    crowdsec.reconcile(shared, &new, stop);
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
