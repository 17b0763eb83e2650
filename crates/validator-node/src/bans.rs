//! Turning the node's decisions into drops in XDP, through the groundzero library.
//!
//! Preferred: the running daemon's API (`groundzero::client`), so each entry carries who asked
//! (`app:validator-node`), why, and a TTL the daemon enforces, and shows up in `groundzero list`
//! and on the journey page. Fallback, when no daemon answers: the daemon's pinned maps opened
//! with `groundzero::Shield` (no metadata; the node lifts its own bans when their TTL ends).
//!
//! Decisions are batched for up to [`FLUSH_EVERY`], so a flood from many sources costs a few
//! API calls, not one per source.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use groundzero::{
    client::{Client, Endpoint},
    IpNet, Shield, ShieldOptions,
};
use tokio::sync::mpsc;

pub const SOURCE: &str = "app:validator-node";
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A ban the node decided.
#[derive(Debug)]
pub struct Ban {
    pub peer: IpAddr,
    pub reason: String,
}

/// Where bans go.
pub enum Banner {
    Daemon(Client),
    /// The maps pinned by a daemon (or `groundzero attach`), and when each ban ends.
    Pinned {
        shield: Box<Shield>,
        expiries: Vec<(Instant, IpNet)>,
    },
    /// Nothing to ban through: bans are only logged.
    LogOnly,
}

impl Banner {
    /// The daemon at `endpoint` if it answers, else the maps pinned under `pin_dir` if given.
    pub async fn connect(endpoint: Option<Endpoint>, pin_dir: Option<PathBuf>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            let client = Client::new(endpoint);
            match client.health().await {
                Ok(_) => return Ok(Banner::Daemon(client)),
                Err(e) if pin_dir.is_some() => {
                    log::warn!("{e}; falling back to the pinned maps")
                }
                Err(e) => return Err(e).context("the groundzero daemon's API"),
            }
        }
        match pin_dir {
            Some(dir) => {
                let shield = Shield::load(ShieldOptions {
                    pin_dir: Some(dir.clone()),
                    ..ShieldOptions::default()
                })
                .with_context(|| format!("opening the maps pinned under {}", dir.display()))?;
                Ok(Banner::Pinned {
                    shield: Box::new(shield),
                    expiries: Vec::new(),
                })
            }
            None => Ok(Banner::LogOnly),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Banner::Daemon(c) => format!("the groundzero daemon at {}", c.endpoint()),
            Banner::Pinned { shield, .. } => format!(
                "the pinned maps under {}",
                shield
                    .options()
                    .pin_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Banner::LogOnly => "nothing (no daemon, no pin dir): bans are only logged".into(),
        }
    }

    /// Applies one batch: entries grouped by reason, one call per reason.
    async fn apply(&mut self, batch: Vec<Ban>, ttl: Duration) -> usize {
        let mut by_reason: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for ban in batch {
            by_reason
                .entry(ban.reason)
                .or_default()
                .push(IpNet::from(ban.peer));
        }
        let mut applied = 0;
        for (reason, nets) in by_reason {
            let result = match self {
                // Per entry: the daemon's guard may refuse some (a spoofed burst from a
                // protected address); the other bans of the batch still apply.
                Banner::Daemon(client) => client
                    .block(&nets, SOURCE, &reason, Some(ttl))
                    .await
                    .map(|outcome| {
                        for (entry, why) in &outcome.refused {
                            log::warn!("not banned {entry}: {why}");
                        }
                        outcome.applied as usize
                    })
                    .map_err(anyhow::Error::from),
                Banner::Pinned { shield, expiries } => {
                    let until = Instant::now() + ttl;
                    expiries.extend(nets.iter().map(|n| (until, *n)));
                    shield
                        .block_all(&nets)
                        .map(|()| nets.len())
                        .map_err(anyhow::Error::from)
                }
                Banner::LogOnly => Ok(nets.len()),
            };
            match result {
                Ok(n) => {
                    applied += n;
                    log::info!("banned {n} peer(s): {reason}");
                    log::debug!("banned {nets:?}");
                }
                Err(e) => log::error!("banning {} peer(s) ({reason}): {e:#}", nets.len()),
            }
        }
        applied
    }

    /// Lifts the pinned-map bans whose TTL ended (the daemon does its own).
    fn expire(&mut self) {
        if let Banner::Pinned { shield, expiries } = self {
            let now = Instant::now();
            expiries.retain(|(until, net)| {
                if *until > now {
                    return true;
                }
                if let Err(e) = shield.unblock(*net) {
                    log::warn!("lifting the ban of {net}: {e}");
                }
                false
            });
        }
    }
}

/// Receives ban decisions and applies them in batches until the channel closes. Returns the
/// number of bans applied.
pub async fn run(mut banner: Banner, mut decisions: mpsc::Receiver<Ban>, ttl: Duration) -> usize {
    let mut applied = 0;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            ban = decisions.recv() => match ban {
                Some(ban) => batch.push(ban),
                None => break,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    applied += banner.apply(std::mem::take(&mut batch), ttl).await;
                }
                banner.expire();
            }
        }
    }
    if !batch.is_empty() {
        applied += banner.apply(batch, ttl).await;
    }
    applied
}
