//! Expiry: holds whose TTL ended are removed, a chunk per lock hold; then the journal is
//! compacted once it has grown well past the live set.

use std::time::Duration;

use crate::stop::Stop;
use crate::{journal, registry, state::Shared};

/// Once a second, removes the holds whose TTL ended, a chunk per lock hold: the API waits
/// for one chunk at most, never for all of a mass expiry.
pub async fn expiry_loop(shared: Shared, stop: Stop) {
    stop.every(Duration::from_secs(1), || async {
        expire_due(&shared).await;
        compact_journal(&shared).await;
    })
    .await;
}

/// Removes every hold due now, chunk by chunk.
async fn expire_due(shared: &Shared) {
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
