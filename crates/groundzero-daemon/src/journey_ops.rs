//! What journeys need the whole daemon for: tracing switched on and off with the daemon's
//! shield, and journeys shown with the registry's entry that dropped them. Apart from
//! [`crate::journey`] (the hub, which the daemon's state holds), so that neither imports the other.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use groundzero::{
    journey::{tracer::format_filter, FlowFilter, Journey, RecordedEntry, TraceStatus},
    ActiveMode, Reason,
};
use groundzero_api::journey::{DecidingEntry, EntryResolution};

use crate::{
    journey::{monotonic_ns, JourneyHub},
    records::Side,
    state::{Daemon, Shared},
};

/// Turns tracing on (or changes sampling) with the daemon's shield.
pub fn start_tracing(
    d: &mut Daemon,
    sample_every: u32,
    filter: FlowFilter,
) -> Result<TraceStatus, groundzero::Error> {
    let hub = d.journey.clone();
    let mut hub = hub.lock().unwrap_or_else(|p| p.into_inner());
    let kernel = hub.kernel()?;
    let missing = d.shield.start_journey(&kernel, sample_every, filter)?;
    hub.generic_interfaces = d
        .shield
        .attachments()
        .iter()
        .filter(|a| a.mode == ActiveMode::Generic)
        .map(|a| a.interface.clone())
        .collect();
    hub.tracing_started(TraceStatus {
        enabled: true,
        sample_every,
        filter: format_filter(&filter),
        stages_missing: missing,
    });
    Ok(hub.status.clone())
}

/// Turns tracing off; the statistics so far stay.
pub fn stop_tracing(d: &mut Daemon) -> Result<TraceStatus, groundzero::Error> {
    d.shield.stop_journey()?;
    let mut hub = d.journey.lock().unwrap_or_else(|p| p.into_inner());
    hub.status.enabled = false;
    Ok(hub.status.clone())
}

/// Whether a journey was dropped by a list entry (whose evidence is recorded at drain time).
pub fn needs_entry(j: &Journey) -> bool {
    matches!(j.reason, Reason::BlockedExact | Reason::BlockedCidr)
}

/// Which sources a batch of journeys needs the dropping entry of: each (source, exact) once,
/// however many of its packets were sampled (a flood is one source dropped many times).
pub fn entry_keys(journeys: &[Journey]) -> Vec<(IpAddr, bool)> {
    let mut keys: Vec<(IpAddr, bool)> = journeys
        .iter()
        .filter(|j| needs_entry(j))
        .map(|j| (j.src, j.reason == Reason::BlockedExact))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The entry that dropped a packet from `src` and its first holder, as the registry has them
/// now: an exact entry is the source itself (the kernel's key); a prefix is the longest blocked
/// prefix covering it (the kernel's LPM match, which it cannot return).
pub fn resolve_entry(
    d: &Daemon,
    (src, exact): (IpAddr, bool),
    at_unix_ms: u64,
) -> Option<RecordedEntry> {
    let entry = if exact {
        Some(ipnet::IpNet::from(src))
    } else {
        d.registry
            .covering(Side::Block, src)
            .into_iter()
            .find(|n| !groundzero::lists::is_exact_net(n))
    }?;
    let holders = d.registry.holders(Side::Block, &entry);
    let holder = holders.first();
    Some(RecordedEntry {
        entry,
        exact,
        source: holder.map(|h| h.source.clone()),
        reason: holder.and_then(|h| h.reason.clone()),
        expires_unix: holder.and_then(|h| h.expires),
        at_unix_ms,
    })
}

/// Records on each journey dropped by a list entry the entry resolved for its source.
pub fn fill_entries(
    journeys: &mut [Journey],
    resolved: &std::collections::HashMap<(IpAddr, bool), Option<RecordedEntry>>,
) {
    for j in journeys.iter_mut().filter(|j| needs_entry(j)) {
        let key = (j.src, j.reason == Reason::BlockedExact);
        j.entry = resolved.get(&key).cloned().flatten();
    }
}

/// One journey as the API shows it, with the entry recorded when it was dropped and the
/// interface's name.
pub fn journey_view(h: &JourneyHub, j: &Journey) -> groundzero_api::journey::Journey {
    let entry = j.entry.as_ref().map(|e| DecidingEntry {
        entry: e.entry,
        expires_unix: e.expires_unix,
        reason: e.reason.clone(),
        resolved: if e.exact {
            EntryResolution::KernelKey
        } else {
            EntryResolution::AtDrain
        },
        resolved_unix_ms: e.at_unix_ms,
        source: e.source.as_deref().map(groundzero_api::Source::parse),
    });
    let age_ns = monotonic_ns().saturating_sub(j.start_ns);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as u64)
        .unwrap_or(0)
        .saturating_sub(age_ns / 1_000_000);
    let sock = |ip: IpAddr, port: u16| match (ip, port) {
        (_, 0) => ip.to_string(),
        (IpAddr::V6(_), p) => format!("[{ip}]:{p}"),
        (IpAddr::V4(_), p) => format!("{ip}:{p}"),
    };
    groundzero_api::journey::Journey {
        drop_reason: j.drop_reason.map(|r| h.drop_reason(r)),
        dst: sock(j.dst, j.dst_port),
        entry,
        family: j.family,
        hops: j.hops.iter().map(crate::wire::hop).collect(),
        id: j.id,
        interface: nix::net::if_::if_indextoname(j.ifindex)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("ifindex {}", j.ifindex)),
        outcome: crate::wire::outcome(j.outcome),
        protocol: j.protocol_name(),
        reason: j.reason,
        src: sock(j.src, j.src_port),
        total_ns: j.total_ns(),
        unix_ms,
        verdict: j.verdict(),
    }
}

/// [`journey_view`] as the stream sends it.
pub fn journey_json(h: &JourneyHub, j: &Journey) -> String {
    groundzero_api::to_json(&journey_view(h, j))
}

/// The journey hub, fetched on a blocking thread: the daemon's lock may be held for a while
/// (a large import), and an async worker must never wait on it.
pub(crate) async fn hub_of(s: Shared) -> Arc<Mutex<JourneyHub>> {
    tokio::task::spawn_blocking(move || s.lock().unwrap_or_else(|p| p.into_inner()).journey.clone())
        .await
        .expect("fetching the journey hub does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero::journey::Outcome;
    use std::collections::HashMap;

    fn dropped(src: &str, reason: Reason) -> Journey {
        Journey {
            id: 1,
            start_ns: 0,
            family: 4,
            protocol: 17,
            src: src.parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            ifindex: 3,
            reason,
            outcome: Outcome::XdpDrop,
            drop_reason: None,
            drop_function: None,
            entry: None,
            hops: Vec::new(),
        }
    }

    /// A flood from one source is resolved once per batch, not once per sampled packet.
    #[test]
    fn a_batch_resolves_each_source_once() {
        let mut batch: Vec<Journey> = (0..100)
            .map(|_| dropped("198.18.0.10", Reason::BlockedExact))
            .collect();
        batch.push(dropped("198.18.1.7", Reason::BlockedCidr));
        batch.push(dropped("198.18.0.11", Reason::NoMatch));
        let keys = entry_keys(&batch);
        let a: IpAddr = "198.18.0.10".parse().unwrap();
        let b: IpAddr = "198.18.1.7".parse().unwrap();
        assert_eq!(keys, vec![(a, true), (b, false)]);
        let entry = RecordedEntry {
            entry: ipnet::IpNet::from(a),
            exact: true,
            source: Some("app:test".into()),
            reason: None,
            expires_unix: None,
            at_unix_ms: 1,
        };
        let resolved = HashMap::from([((a, true), Some(entry.clone())), ((b, false), None)]);
        fill_entries(&mut batch, &resolved);
        assert!(batch[..100]
            .iter()
            .all(|j| j.entry.as_ref() == Some(&entry)));
        assert_eq!(batch[100].entry, None);
        assert_eq!(batch[101].entry, None);
    }
}
