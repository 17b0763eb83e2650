//! The CrowdSec watcher's loop (`[crowdsec.push]`): once per interval, everything the registry
//! queued in its [`Outbox`](crate::crowdsec_push::Outbox) goes to the LAPI in one
//! `POST /v1/alerts`. A failed push puts the bans back (the queue's bound still holds) and
//! backs off like the pull ([`crate::tasks::crowdsec::backoff`]); bans keep being applied
//! locally whatever the LAPI does, since the registry only queues them.

use crate::{
    config::ValidPush,
    crowdsec_push::{self, Session, MAX_BATCH},
    registry::now_unix,
    stop::Stop,
    tasks::crowdsec::backoff,
    Shared,
};

/// Pushes until `stop` (a push in progress finishes first). The outbox itself is set up by
/// whoever starts this (start-up, SIGHUP).
pub async fn push_loop(shared: Shared, config: ValidPush, stop: Stop) {
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    let mut session: Option<Session> = None;
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(backoff(config.interval, failures)) => {}
        }
        let shared_ = shared.clone();
        let config_ = config.clone();
        let session_ = session.take();
        let joined = tokio::task::spawn_blocking(move || {
            let mut session = session_;
            let batch = {
                let mut d = shared_.lock().unwrap_or_else(|p| p.into_inner());
                match d.registry.push_mut() {
                    Some(outbox) => outbox.take(MAX_BATCH),
                    None => Vec::new(),
                }
            };
            if batch.is_empty() {
                return (session, None);
            }
            // The HTTP exchange runs without the daemon's lock: bans go on meanwhile.
            let outcome = crowdsec_push::push(&config_, &mut session, &batch, now_unix());
            let mut d = shared_.lock().unwrap_or_else(|p| p.into_inner());
            let Some(outbox) = d.registry.push_mut() else {
                return (session, None);
            };
            let now = now_unix();
            outbox.status.last_attempt = Some(now);
            let failures = match outcome {
                Ok(pushed) => {
                    outbox.status.logins += pushed.logins as u64;
                    outbox.status.pushed_alerts += pushed.alerts as u64;
                    outbox.status.last_push = Some(now);
                    outbox.status.error = None;
                    outbox.status.consecutive_errors = 0;
                    log::info!(
                        "crowdsec push: {} alerts to {} as {}",
                        pushed.alerts,
                        config_.lapi_url,
                        config_.machine_id
                    );
                    0
                }
                Err(e) => {
                    outbox.put_back(batch);
                    outbox.status.push_errors += 1;
                    outbox.status.consecutive_errors =
                        outbox.status.consecutive_errors.saturating_add(1);
                    let text = groundzero::text::for_terminal(&e.to_string()).into_owned();
                    log::warn!(
                        "crowdsec push failed, {} bans stay queued: {text}",
                        outbox.len()
                    );
                    outbox.status.error = Some(text);
                    outbox.status.consecutive_errors
                }
            };
            (session, Some(failures))
        })
        .await;
        match joined {
            Ok((s, outcome)) => {
                session = s;
                if let Some(f) = outcome {
                    failures = f;
                }
            }
            Err(e) => {
                log::error!("crowdsec push: a push panicked: {e}");
                failures = failures.saturating_add(1);
            }
        }
    }
}
