//! The journey drain: kernel journey events from the ring buffer into the
//! [`JourneyHub`](crate::journey::JourneyHub), and once a second the rates and a summary for
//! live viewers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use groundzero::journey::{Journey, JourneyEvents};
use groundzero_api::journey::EventKind;

use super::ring::register;
use crate::stop::Stop;
use crate::{
    journey::{
        hub::{JourneyHub, Sample},
        monotonic_ns, summary_json,
    },
    journey_ops::{entry_keys, fill_entries, hub_of, journey_json, needs_entry, resolve_entry},
    state::Shared,
};

/// Drains journey events as they come, and once a second closes timed-out journeys, updates
/// rates and sends a summary to live viewers; until `stop`.
pub async fn journey_loop(shared: Shared, events: JourneyEvents, stop: Stop) {
    let hub = hub_of(shared.clone()).await;
    let mut events = match register(events) {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("journey: cannot poll the ring buffer: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            ready = events.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                let done = lock(&hub).assemble(guard.get_inner_mut());
                guard.clear_ready();
                publish(&shared, &hub, done).await;
            }
            _ = tick.tick() => {
                let expired = lock(&hub).next_second(monotonic_ns());
                publish(&shared, &hub, expired).await;
                update_rates(&shared, &hub).await;
                let h = lock(&hub);
                h.broadcast(EventKind::Summary.label(), summary_json(&h));
            }
        }
    }
}

/// The hub's lock. It is only ever held for in-memory work: fine on an async thread.
fn lock(hub: &Mutex<JourneyHub>) -> std::sync::MutexGuard<'_, JourneyHub> {
    hub.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records finished journeys (with the entry that dropped them, read from the registry now,
/// as their events are drained) and streams some of them.
async fn publish(shared: &Shared, hub: &Arc<Mutex<JourneyHub>>, mut done: Vec<Journey>) {
    if done.is_empty() {
        return;
    }
    if done.iter().any(needs_entry) {
        done = match record_entries(shared, done).await {
            Ok(done) => done,
            Err(e) => {
                log::error!("journey: recording drop entries failed: {e}");
                return;
            }
        };
    }
    let h = &mut *lock(hub);
    for j in h.record(done) {
        let text = journey_json(h, &j);
        h.broadcast(EventKind::Journey.label(), text);
    }
}

/// Sources resolved per hold of the daemon's lock: the lock is released between chunks, so a
/// flood of sampled drops never holds it (and the drain behind it) for long.
const ENTRIES_PER_LOCK: usize = 64;

/// Records on the journeys dropped by a list entry the entry and its holder, read from the
/// registry (behind the daemon's lock, on a blocking thread), each source once per batch.
async fn record_entries(
    shared: &Shared,
    mut done: Vec<Journey>,
) -> Result<Vec<Journey>, tokio::task::JoinError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let at_unix_ms = crate::journey::hub::unix_now().as_millis() as u64;
        let keys = entry_keys(&done);
        let mut resolved = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(ENTRIES_PER_LOCK) {
            let d = shared.lock().unwrap_or_else(|p| p.into_inner());
            for key in chunk {
                resolved.insert(*key, resolve_entry(&d, *key, at_unix_ms));
            }
        }
        fill_entries(&mut done, &resolved);
        done
    })
    .await
}

/// Reads the counters and run-time statistics (on a blocking thread: the daemon's lock) and
/// updates the hub's rates and costs.
async fn update_rates(shared: &Shared, hub: &Arc<Mutex<JourneyHub>>) {
    let shared = shared.clone();
    let sample = tokio::task::spawn_blocking(move || {
        Sample::read(&shared.lock().unwrap_or_else(|p| p.into_inner()).shield)
    })
    .await
    .ok()
    .flatten();
    if let Some(sample) = sample {
        lock(hub).update_rates(std::time::Instant::now(), sample);
    }
}
