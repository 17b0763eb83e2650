//! Rate-based bans: sources the XDP rate limit reports are banned for `ban_ttl`, through the
//! registry (so through the guard).

use super::ring::register;
use crate::stop::Stop;
use crate::{
    registry::{now_unix, EntryStatus, Holder, Side},
    state::Shared,
};
use groundzero::ratelimit::RateEvents;

/// Bans sources the XDP rate limit reports, for `ban_ttl`, unless the guard protects them;
/// until `stop`.
pub async fn rate_ban_loop(shared: Shared, events: RateEvents, stop: Stop) {
    let mut events = match register(events) {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("rate limit: cannot poll the ring buffer: {e}");
            return;
        }
    };
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        let ready = tokio::select! {
            _ = &mut stopped => return,
            ready = events.readable_mut() => ready,
        };
        let Ok(mut guard) = ready else {
            return;
        };
        let mut over = Vec::new();
        guard.get_inner_mut().drain(|o| over.push(o));
        guard.clear_ready();
        if over.is_empty() {
            continue;
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut d = shared.lock().unwrap_or_else(|p| p.into_inner());
            let d = &mut *d;
            let rate = d.config.raw.ratelimit.rate;
            let ttl = d.config.ban_ttl.as_secs();
            // One ban per source: a bucket reports at most once a second, but a burst of
            // reports may name a source twice.
            let mut nets: Vec<ipnet::IpNet> = Vec::new();
            let mut dropped = 0;
            for o in over {
                // The bucket's prefix (a /64 by default for IPv6): banning one address of it
                // would let the rest of the /64 go on.
                let net = o.prefix;
                if !d.registry.present(Side::Block, &net) && !nets.contains(&net) {
                    nets.push(net);
                    dropped = dropped.max(o.dropped);
                }
            }
            if nets.is_empty() {
                return;
            }
            let now = now_unix();
            let holder = Holder {
                source: groundzero_api::Source::AutoBan.to_string(),
                reason: Some(format!("over {rate} pps (up to {dropped} packets dropped)")),
                created: now,
                expires: Some(now.saturating_add(ttl)),
            };
            // Through the registry, so through the guard like every other block: a spoofed
            // flood from a protected, allowlisted or management address is never banned. One
            // call for the batch: one journal write, one fsync.
            match d.registry.add(
                &mut d.shield,
                Side::Block,
                &nets,
                &holder,
                groundzero::guard::Policy::STRICT,
                false,
            ) {
                Ok(outcomes) => {
                    for o in outcomes {
                        match o.status {
                            EntryStatus::Refused { why } => log::warn!(
                                "rate limit: {} is over {rate} pps but not banned: {why}",
                                o.entry
                            ),
                            _ => log::info!("rate limit: banned {} for {ttl}s", o.entry),
                        }
                    }
                }
                Err(e) => log::error!("rate limit: banning {} source(s): {e}", nets.len()),
            }
        })
        .await;
    }
}
