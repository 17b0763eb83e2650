//! The daemon's snapshot: what the shield knows, plus the registry's view (entries by list,
//! source and family; feed status; guard refusals; journal damage) and the journey histograms.

use crate::state::Shared;

use super::snapshot::{
    CrowdsecMetrics, FeedMetrics, JourneyHistograms, ListCount, MetricsSnapshot, DEFAULT_TOP_N,
};

/// Reads a snapshot of the running daemon; called at scrape time on a blocking thread.
pub(crate) fn daemon_snapshot(shared: &Shared) -> Result<MetricsSnapshot, groundzero::Error> {
    // The lists (a million entries take about a second to read) are read through the
    // reader's own map fds with the lock released, so a scrape never stalls the API.
    let reader = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .shield
        .list_reader()?;
    let (blocked, allowed) = (reader.blocked()?, reader.allowed()?);
    let d = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut snapshot =
        MetricsSnapshot::from_shield_and_lists(&d.shield, &blocked, &allowed, DEFAULT_TOP_N)?;
    snapshot.journey = Some(JourneyHistograms(
        d.journey
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .histograms
            .clone(),
    ));
    snapshot.lists = d
        .registry
        .counts()
        .into_iter()
        .map(|((side, source, family), entries)| ListCount {
            list: side,
            family,
            // The source's kind only (`feed`, `app`, ...): names stay out of this label.
            source,
            entries,
        })
        .collect();
    snapshot.feeds = d
        .registry
        .feed_statuses()
        .into_iter()
        .map(|status| FeedMetrics {
            refresh_interval: d
                .config
                .feeds
                .iter()
                .find(|c| c.name == status.name)
                .map(|c| c.refresh),
            status,
        })
        .collect();
    let push = d.registry.push().map(|o| o.reply());
    snapshot.crowdsec = (d.config.crowdsec.is_some() || push.is_some()).then(|| CrowdsecMetrics {
        status: groundzero_api::crowdsec::CrowdsecReply {
            push,
            ..d.crowdsec.clone().unwrap_or_default()
        },
        pull_interval: d.config.crowdsec.as_ref().map(|c| c.pull_interval),
    });
    snapshot.guard_refusals = d
        .registry
        .refusal_counts()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    snapshot.drops_by_origin = d.registry.drops_by_origin(&blocked).into_iter().collect();
    snapshot.journal_damage = d.registry.journal_damage().len() as u64;
    Ok(snapshot)
}
