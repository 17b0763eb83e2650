//! Blocklist feeds on a schedule: each configured feed is fetched, parsed and applied every
//! `refresh`; on any failure the old set stays and the feed's status says why.

use std::time::Duration;

use groundzero::guard::Policy;

use crate::stop::Stop;
use crate::{
    config::ValidFeed,
    feeds::{self, ParsedFeed},
    registry::{FeedPolicy, RegistryError},
    state::Shared,
};

/// How long one feed download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Refreshes `feed` now and then every `feed.refresh`, until `stop`. A stop during a download
/// abandons it (nothing was changed yet); a refresh being applied finishes first.
pub async fn feed_loop(shared: Shared, feed: ValidFeed, stop: Stop) {
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        let fetched = tokio::select! {
            _ = &mut stopped => return,
            fetched = fetch(&feed) => fetched,
        };
        apply(&shared, &feed, fetched).await;
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(feed.refresh) => {}
        }
    }
}

/// Fetches, parses and applies one feed; on any failure the old set stays and the status says why.
/// The work runs in a task of its own: a caller that goes away (a request past its timeout, a
/// client that hangs up) does not cancel a download half way, so its result is applied or its
/// failure recorded either way.
pub async fn refresh_feed(shared: &Shared, feed: &ValidFeed) {
    let (shared, feed) = (shared.clone(), feed.clone());
    let _ = tokio::spawn(async move {
        let fetched = fetch(&feed).await;
        apply(&shared, &feed, fetched).await;
    })
    .await;
}

/// Downloads and parses the feed on a blocking thread; touches no state.
async fn fetch(feed: &ValidFeed) -> Result<ParsedFeed, String> {
    let feed = feed.clone();
    tokio::task::spawn_blocking(move || {
        feeds::fetch(&feed.url, FETCH_TIMEOUT)
            .and_then(|text| feeds::parse_feed(&text, feed.format, &format!("feed {}", feed.name)))
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|join| Err(format!("the fetch task failed: {join}")))
}

/// Replaces the feed's set with what was fetched, or records why the refresh failed.
async fn apply(shared: &Shared, feed: &ValidFeed, fetched: Result<ParsedFeed, String>) {
    let shared = shared.clone();
    let feed = feed.clone();
    let _ = tokio::task::spawn_blocking(move || {
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
                    let refused = matches!(e, RegistryError::FeedRefused { .. });
                    (e.to_string(), refused)
                }),
            Err(e) => Err((e, false)),
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
