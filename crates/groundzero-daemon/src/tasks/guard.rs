//! The lockout guard's view of the management addresses, and the XDP rate limit's exemptions
//! kept in step with it.

use std::{collections::BTreeSet, time::Duration};

use groundzero::guard::{Guard, ManagementSnapshot};
use ipnet::IpNet;

use crate::stop::Stop;
use crate::{
    config::Validated,
    state::{Daemon, Shared},
};

/// How often the guard re-reads the management addresses (own addresses, SSH peers,
/// resolvers, feed servers) and the rate limit's exempt set follows them.
pub const GUARD_REFRESH: Duration = Duration::from_secs(2);

/// Keeps the guard's view of the management addresses current, off the daemon's lock, and the
/// kernel's rate-limit exemptions in step with it.
pub async fn guard_loop(shared: Shared, stop: Stop) {
    stop.every(GUARD_REFRESH, || refresh(shared.clone())).await;
}

/// One refresh, on a blocking thread: the management addresses read off the lock, then the
/// guard and the rate limit's exemptions updated under it.
async fn refresh(shared: Shared) {
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

/// The prefixes the XDP rate limit must never count: `ratelimit.exempt`, `guard.protected` and
/// the management addresses the guard last read (a spoofed flood from the admin's address must
/// not rate-drop the admin, let alone ban them).
pub(crate) fn wanted_rate_exempt(config: &Validated, guard: &Guard) -> BTreeSet<IpNet> {
    config
        .rate_exempt
        .iter()
        .chain(&config.protected)
        .copied()
        .chain(guard.management_addresses())
        .collect()
}

/// Brings the kernel's rate-limit exemptions to what the config and the guard want.
pub(crate) fn sync_rate_exempt(d: &mut Daemon) {
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
