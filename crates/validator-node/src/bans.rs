//! Turning the node's decisions into drops in XDP, through the groundzero library.
//!
//! Preferred: the running daemon's API (`groundzero_api::client`), so each entry carries who asked
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
    guard::{Guard, ManagementSnapshot, Policy},
    IpNet, Shield, ShieldOptions,
};
use groundzero_api::client::{Client, Endpoint};
use tokio::sync::mpsc;

pub const SOURCE: &str = "app:validator-node";
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The port whose established peers the fallback's guard protects (as the daemon's default).
const SSH_PORT: u16 = 22;
/// How often the fallback's guard re-reads this host's management addresses.
const GUARD_REFRESH: Duration = Duration::from_secs(2);

/// A ban the node decided.
#[derive(Debug)]
pub struct Ban {
    pub peer: IpAddr,
    pub reason: String,
}

/// Where bans go.
pub enum Banner {
    Daemon(Client),
    /// The maps pinned by a daemon (or `groundzero attach`), and when each ban ends. Bans
    /// pass the same lockout guard as the daemon's (this host's addresses, SSH peers,
    /// resolvers, the allowlist, wide prefixes), since no daemon judges them here.
    Pinned {
        shield: Box<Shield>,
        expiries: Vec<(Instant, IpNet)>,
        guard: Box<Guard>,
        guard_read: Instant,
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
                    guard: Box::new(Guard::new(Vec::new(), true, SSH_PORT, Vec::new())),
                    guard_read: Instant::now(),
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
                Banner::Pinned {
                    shield,
                    expiries,
                    guard,
                    guard_read,
                } => {
                    if guard_read.elapsed() > GUARD_REFRESH {
                        guard.install(ManagementSnapshot::read(SSH_PORT, &[]));
                        *guard_read = Instant::now();
                    }
                    let allowed: Vec<IpNet> = shield
                        .allowed()
                        .map(|a| a.into_iter().map(|e| e.net).collect())
                        .unwrap_or_default();
                    let mut accepted = Vec::new();
                    for net in &nets {
                        match guard.check(net, &allowed, Policy::STRICT) {
                            Ok(()) => accepted.push(*net),
                            Err(refusal) => log::warn!("not banned: {refusal}"),
                        }
                    }
                    let until = Instant::now() + ttl;
                    expiries.extend(accepted.iter().map(|n| (until, *n)));
                    shield
                        .block_all(&accepted)
                        .map(|()| accepted.len())
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
        if let Banner::Pinned {
            shield, expiries, ..
        } = self
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback writes straight into the pinned maps, so it must judge bans itself: a ban
    /// of this host's own address is refused, the rest of the batch applied.
    #[tokio::test]
    async fn the_pinned_fallback_passes_bans_through_the_guard() {
        assert!(
            std::fs::metadata("/sys/fs/bpf").is_ok() && nix_root(),
            "this test loads BPF maps: it needs root (CI runs it as root)"
        );
        groundzero::pins::ensure_bpffs().unwrap();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/gz-vn-{}", std::process::id()));
        let own = ManagementSnapshot::read(SSH_PORT, &[])
            .addresses
            .into_iter()
            .find(|(_, why)| *why == "an address of this host")
            .map(|(net, _)| net)
            .expect("this host has a non-loopback address");
        let mut banner = Banner::connect(None, Some(pin_dir.clone())).await.unwrap();
        let batch = vec![
            Ban {
                peer: own.addr(),
                reason: "spoofed".into(),
            },
            Ban {
                peer: "198.18.50.1".parse().unwrap(),
                reason: "spoofed".into(),
            },
        ];
        let applied = banner.apply(batch, Duration::from_secs(60)).await;
        let blocked: Vec<IpNet> = match &banner {
            Banner::Pinned { shield, .. } => shield
                .blocked()
                .unwrap()
                .into_iter()
                .map(|e| e.net)
                .collect(),
            _ => panic!("expected the pinned fallback"),
        };
        drop(banner);
        let _ = groundzero::pins::remove_all(&pin_dir);
        assert_eq!(applied, 1);
        assert_eq!(blocked, vec!["198.18.50.1/32".parse::<IpNet>().unwrap()]);
    }

    fn nix_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }
}
