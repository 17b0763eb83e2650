//! What is on the lists and why: every entry's holders (who asked for it, with reason, creation
//! time and expiry), kept in step with the BPF maps.
//!
//! An entry is in its map while anyone holds it: a manual or API block, an auto-ban, an
//! application, or one or more feeds. A change goes to the map first, then to the journal
//! (fsync'd), then to memory, and is undone in the map if the journal write fails; so an
//! acknowledged change survives `kill -9`, and a change the journal could not keep is not left
//! in the kernel. At start the journal, the feed caches and the pinned maps are reconciled,
//! and nothing found in a map is dropped.

use groundzero::lists::Family;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use ipnet::IpNet;

use groundzero_common::{
    verdict::{decide_addr, Lists},
    Reason,
};

use groundzero::guard::{Guard, Policy, Refusal};

pub use crate::records::{now_unix, source_kind, FeedStatus, Holder, Side};
use crate::{
    feeds::{FeedFormat, ParsedFeed},
    journal::{self, Journal, JournalError, Record},
};
use groundzero::{Error as ShieldError, ListEntry, Shield};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The journal could not be written: the change was rolled back and not acknowledged.
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Shield(#[from] ShieldError),
    #[error("writing feed cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The guard refused entries of an all-or-nothing request: nothing was applied.
    #[error("{}", refusals_text(.0))]
    Refused(Vec<Refusal>),
    /// A feed refresh or import was refused as a whole: the previous set stays in force.
    #[error("feed {feed}: refused, the previous set stays in force: {why}")]
    FeedRefused { feed: String, why: String },
}

fn refusals_text(refusals: &[Refusal]) -> String {
    const SHOWN: usize = 5;
    let mut text = refusals
        .iter()
        .take(SHOWN)
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if refusals.len() > SHOWN {
        text.push_str(&format!("; and {} more", refusals.len() - SHOWN));
    }
    text + "; pass force to do it anyway"
}

/// What became of each entry of an add request, as the API shows it.
pub use groundzero_api::lists::{EntryOutcome, EntryStatus};

/// How a feed refresh or import is judged before it is applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedPolicy {
    pub guard: Policy,
    /// Refuse a refresh that adds and removes more than this share of the current set (the
    /// first load of a feed is not limited). `None`: no limit.
    pub max_change: Option<f64>,
}

/// An entry, and the answer to "why", as the API shows them.
pub use groundzero_api::lists::{EntryView, WhyReply as Why};
use groundzero_api::{lists::EntryKind, Source};

struct FeedSet {
    nets: HashSet<IpNet>,
    /// How many of `nets` are IPv4 (for counts without a walk).
    v4: usize,
    status: FeedStatus,
}

impl FeedSet {
    fn new(nets: HashSet<IpNet>, status: FeedStatus) -> Self {
        let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
        Self { nets, v4, status }
    }
}

/// Expiry works in chunks so the daemon's lock is released between them: 50,000 expiring
/// entries must not keep the API waiting (a chunk of 500 takes about 10 ms in a debug build,
/// most of it encoding journal records).
pub const CHUNK: usize = 500;

pub struct Registry {
    held: BTreeMap<(Side, IpNet), Vec<Holder>>,
    feeds: BTreeMap<String, FeedSet>,
    journal: Journal,
    state_dir: PathBuf,
    guard: Guard,
    /// Blocks the guard refused, by the kind of source that asked (`api`, `feed`, `auto-ban`, ...).
    refusals: BTreeMap<String, u64>,
    /// Holds per (side, source kind, family), kept in step with `held` so that `/v1/stats` and
    /// scrapes do not walk every entry (50 ms at 50k entries in a debug build).
    tally: HashMap<(Side, String, Family), u64>,
    /// `[crowdsec.push]`: the bans that enter through [`Registry::add`] are offered here.
    push: Option<crate::crowdsec_push::Outbox>,
}

/// `nets` without repeats, in first-seen order.
fn dedup(nets: &[IpNet]) -> Vec<IpNet> {
    let mut seen = HashSet::with_capacity(nets.len());
    nets.iter().filter(|n| seen.insert(**n)).copied().collect()
}

fn insert(shield: &mut Shield, side: Side, nets: &[IpNet]) -> Result<(), ShieldError> {
    match side {
        Side::Block => shield.block_all(nets),
        Side::Allow => shield.allow_all(nets),
    }
}

fn delete(shield: &mut Shield, side: Side, nets: &[IpNet]) -> Result<(), ShieldError> {
    match side {
        Side::Block => shield.unblock_all(nets),
        Side::Allow => nets.iter().try_for_each(|n| shield.unallow(*n).map(|_| ())),
    }
}

/// Puts `nets` in their map; when the map is too small for all of them, as many as fit, and
/// returns the rest (a journal from a daemon with larger maps must not stop this one).
fn restore(shield: &mut Shield, side: Side, nets: &[IpNet]) -> Result<Vec<IpNet>, ShieldError> {
    match insert(shield, side, nets) {
        Ok(()) => Ok(Vec::new()),
        Err(ShieldError::MapFull { .. }) => {
            let mut unfit = Vec::new();
            for net in nets {
                match insert(shield, side, std::slice::from_ref(net)) {
                    Ok(()) => {}
                    Err(ShieldError::MapFull { .. }) => unfit.push(*net),
                    Err(e) => return Err(e),
                }
            }
            Ok(unfit)
        }
        Err(e) => Err(e),
    }
}

impl Registry {
    /// Loads the journal and feed caches from `state_dir`, reconciles them with what `shield`'s
    /// (possibly pinned) maps hold, and compacts the journal. Every block written later passes
    /// `guard`.
    pub fn open(
        state_dir: &Path,
        shield: &mut Shield,
        guard: Guard,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(state_dir.join("feeds")).map_err(|source| {
            RegistryError::Cache {
                path: state_dir.join("feeds"),
                source,
            }
        })?;
        // Damage never stops the start: intact records are kept, the rest is moved aside.
        let recovered = journal::recover(state_dir)?;
        for damage in &recovered.damage {
            log::warn!("journal damage: {damage}");
        }
        let mut held: BTreeMap<(Side, IpNet), Vec<Holder>> = BTreeMap::new();
        for record in recovered.records {
            apply_record(&mut held, record);
        }
        let mut feeds = load_feed_caches(&state_dir.join("feeds"));

        // Reconcile with the maps: add what is recorded but missing; adopt what is present but
        // unrecorded (never drop a block we cannot account for).
        let in_maps: Vec<(Side, ListEntry)> = shield
            .blocked()?
            .into_iter()
            .map(|e| (Side::Block, e))
            .chain(shield.allowed()?.into_iter().map(|e| (Side::Allow, e)))
            .collect();
        let present: HashSet<(Side, IpNet)> = in_maps.iter().map(|(s, e)| (*s, e.net)).collect();
        let mut desired: HashSet<(Side, IpNet)> = held.keys().copied().collect();
        for feed in feeds.values() {
            desired.extend(feed.nets.iter().map(|n| (Side::Block, *n)));
        }
        let missing = |side: Side| -> Vec<IpNet> {
            let mut v: Vec<IpNet> = desired
                .iter()
                .filter(|k| k.0 == side && !present.contains(k))
                .map(|k| k.1)
                .collect();
            v.sort();
            v
        };
        let (missing_allow, missing_block) = (missing(Side::Allow), missing(Side::Block));
        let unfit_allow = restore(shield, Side::Allow, &missing_allow)?;
        let unfit_block = restore(shield, Side::Block, &missing_block)?;
        if !missing_block.is_empty() || !missing_allow.is_empty() {
            log::info!(
                "restored {} blocked and {} allowed entries from the journal and feed caches",
                missing_block.len() - unfit_block.len(),
                missing_allow.len() - unfit_allow.len()
            );
        }
        if !unfit_block.is_empty() || !unfit_allow.is_empty() {
            // Recorded but no room: set aside where an operator finds them, never dropped
            // silently, and the daemon still starts.
            let path = state_dir.join(format!("unfit-{}.txt", now_unix()));
            let mut text = String::from(
                "# entries from the journal or feed caches that did not fit in the maps\n",
            );
            for (side, nets) in [(Side::Allow, &unfit_allow), (Side::Block, &unfit_block)] {
                for net in nets {
                    text.push_str(&format!("{side:?} {net}\n"));
                    held.remove(&(side, *net));
                    for feed in feeds.values_mut() {
                        if side == Side::Block && feed.nets.remove(net) {
                            feed.status.entries = feed.nets.len() as u64;
                            feed.v4 -= usize::from(net.addr().is_ipv4());
                        }
                    }
                }
            }
            let _ = std::fs::write(&path, text);
            log::error!(
                "{} blocked and {} allowed entries did not fit in the maps (capacity too small); \
                 listed in {}",
                unfit_block.len(),
                unfit_allow.len(),
                path.display()
            );
        }
        let now = now_unix();
        let mut adopted = 0;
        for key in present.difference(&desired) {
            held.entry(*key).or_default().push(Holder {
                source: Source::Adopted.to_string(),
                reason: Some("found in the pinned map with no record".into()),
                created: now,
                expires: None,
            });
            adopted += 1;
        }
        if adopted > 0 {
            log::warn!("adopted {adopted} map entries that had no record (source \"adopted\")");
        }
        let journal = match Journal::rewrite(state_dir, &live_records(&held)) {
            Ok(journal) => journal,
            // A full disk must not keep the daemon from starting (and TTLs from expiring): go
            // on appending to the journal as it is; the next compaction shrinks it.
            Err(e) if state_dir.join(journal::FILE_NAME).exists() => {
                log::warn!(
                    "compacting the journal at start failed ({e}); appending to it as it is"
                );
                Journal::append_to_existing(state_dir)?
            }
            Err(e) => return Err(e.into()),
        }
        .with_damage(recovered.damage);
        let mut registry = Self {
            held,
            feeds,
            journal,
            state_dir: state_dir.to_path_buf(),
            guard,
            refusals: BTreeMap::new(),
            tally: HashMap::new(),
            push: None,
        };
        let keys: Vec<(Side, IpNet)> = registry.held.keys().copied().collect();
        for key in keys {
            registry.tally(key, true);
        }
        Ok(registry)
    }

    /// Applies one record to the in-memory holds, keeping the per-source counts in step.
    fn apply(&mut self, record: Record) {
        let key = match &record {
            Record::Add { side, net, .. } | Record::Remove { side, net, .. } => (*side, *net),
        };
        self.tally(key, false);
        apply_record(&mut self.held, record);
        self.tally(key, true);
    }

    /// Adds (or takes away) the holders of `key` to the counts behind [`Registry::counts`].
    fn tally(&mut self, key: (Side, IpNet), add: bool) {
        let Some(holders) = self.held.get(&key) else {
            return;
        };
        for h in holders {
            let slot = (
                key.0,
                source_kind(&h.source).to_string(),
                Family::of(&key.1),
            );
            let n = self.tally.entry(slot).or_default();
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// The CrowdSec push outbox, if `[crowdsec.push]` is configured.
    pub fn push_mut(&mut self) -> Option<&mut crate::crowdsec_push::Outbox> {
        self.push.as_mut()
    }

    /// The CrowdSec push outbox, if configured.
    pub fn push(&self) -> Option<&crate::crowdsec_push::Outbox> {
        self.push.as_ref()
    }

    /// Sets, reconfigures (keeping what is queued) or removes the push outbox.
    pub fn set_push(&mut self, config: Option<&crate::config::ValidPush>) {
        match (config, &mut self.push) {
            (None, _) => self.push = None,
            (Some(c), Some(push)) => push.reconfigure(c),
            (Some(c), None) => self.push = Some(crate::crowdsec_push::Outbox::new(c)),
        }
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn guard_mut(&mut self) -> &mut Guard {
        &mut self.guard
    }

    /// Blocks refused by the guard so far, by source kind.
    pub fn refusal_counts(&self) -> &BTreeMap<String, u64> {
        &self.refusals
    }

    /// Is `net` in its map (held by anyone)?
    pub fn present(&self, side: Side, net: &IpNet) -> bool {
        self.held.contains_key(&(side, *net))
            || (side == Side::Block && self.feeds.values().any(|f| f.nets.contains(net)))
    }

    /// The allowlist as the guard needs it.
    fn allowed(&self) -> Vec<IpNet> {
        self.held
            .keys()
            .filter(|(s, _)| *s == Side::Allow)
            .map(|(_, n)| *n)
            .collect()
    }

    fn count_refusals(&mut self, source: &str, n: usize) {
        if n > 0 {
            *self
                .refusals
                .entry(source_kind(source).to_string())
                .or_default() += n as u64;
        }
    }

    /// When the journal has grown well past the live set (refused requests write nothing,
    /// but churn and expiry do): begins a compaction and returns what its file must hold. The
    /// caller writes it with [`journal::write_compaction`] without the daemon's lock (it takes
    /// hundreds of ms at 50k entries) and ends it with [`Registry::finish_compaction`].
    pub fn start_compaction(&mut self) -> Option<(PathBuf, Vec<Record>)> {
        let live = self.held.values().map(Vec::len).sum::<usize>();
        if self.journal.compacting() || !self.journal.should_compact(live) {
            return None;
        }
        self.journal.begin_compaction();
        Some((self.state_dir.clone(), live_records(&self.held)))
    }

    pub fn finish_compaction(
        &mut self,
        written: Result<(std::fs::File, u64), JournalError>,
        live: usize,
    ) -> Result<(), JournalError> {
        self.journal.finish_compaction(written, live)
    }

    /// Damage found in the journal at start-up (moved aside, see the log).
    pub fn journal_damage(&self) -> &[journal::Damage] {
        self.journal.damage()
    }

    /// Adds `holder`'s hold on every net (replacing an earlier hold by the same source). Blocks
    /// pass the guard with `policy`; refused entries are reported per entry and the rest is
    /// applied, or, with `all_or_nothing`, nothing is applied and the refusals are the error.
    ///
    /// Order: maps, then journal, then the in-memory records. A change that fails at any step
    /// is undone in the maps and writes nothing to the journal, and only a change that is in
    /// both is acknowledged (a crash between the two leaves an unacknowledged entry, which the
    /// next start adopts rather than drops).
    pub fn add(
        &mut self,
        shield: &mut Shield,
        side: Side,
        nets: &[IpNet],
        holder: &Holder,
        policy: Policy,
        all_or_nothing: bool,
    ) -> Result<Vec<EntryOutcome>, RegistryError> {
        let nets = dedup(nets);
        let mut outcomes: Vec<EntryOutcome> = Vec::with_capacity(nets.len());
        let mut refusals = Vec::new();
        if side == Side::Block {
            let allowed = self.allowed();
            for net in &nets {
                if let Err(r) = self.guard.check(net, &allowed, policy) {
                    refusals.push(r);
                }
            }
        }
        self.count_refusals(&holder.source, refusals.len());
        if all_or_nothing && !refusals.is_empty() {
            return Err(RegistryError::Refused(refusals));
        }
        // Each refused entry with why, looked up by entry when the outcomes are built.
        let refused: HashMap<IpNet, String> =
            refusals.iter().map(|r| (r.entry, r.to_string())).collect();
        let accepted: Vec<IpNet> = nets
            .iter()
            .filter(|n| !refused.contains_key(n))
            .copied()
            .collect();
        let new: Vec<IpNet> = accepted
            .iter()
            .filter(|n| !self.present(side, n))
            .copied()
            .collect();
        insert(shield, side, &new)?;
        let records: Vec<Record> = accepted
            .iter()
            .map(|n| Record::Add {
                side,
                net: *n,
                holder: holder.clone(),
            })
            .collect();
        if let Err(e) = self.journal.append(&records) {
            if let Err(undo) = delete(shield, side, &new) {
                log::error!("undoing a change the journal refused: {undo}");
            }
            return Err(e.into());
        }
        // The push hook: blocks this source did not hold before (not a re-ban that only
        // extends a hold), offered once the change is journaled and in the maps.
        let entering: Vec<IpNet> = match &self.push {
            Some(push) if side == Side::Block && push.wants(&holder.source) => accepted
                .iter()
                .filter(|n| {
                    !self
                        .held
                        .get(&(side, **n))
                        .is_some_and(|hs| hs.iter().any(|h| h.source == holder.source))
                })
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        if let Some(push) = &mut self.push {
            push.offer(&entering, holder);
        }
        for net in &accepted {
            self.apply(Record::Add {
                side,
                net: *net,
                holder: holder.clone(),
            });
        }
        let new: HashSet<IpNet> = new.into_iter().collect();
        for net in nets {
            let status = if let Some(why) = refused.get(&net) {
                EntryStatus::Refused { why: why.clone() }
            } else if new.contains(&net) {
                EntryStatus::Added
            } else {
                EntryStatus::Held
            };
            outcomes.push(EntryOutcome { entry: net, status });
        }
        Ok(outcomes)
    }

    /// Removes holds on `nets`: only `source`'s, or every non-feed hold if `None`. An entry
    /// leaves its map when nobody holds it any more. Returns (left the map, still held).
    /// Nothing is journaled for entries where nothing changed.
    pub fn remove(
        &mut self,
        shield: &mut Shield,
        side: Side,
        nets: &[IpNet],
        source: Option<&str>,
    ) -> Result<(Vec<IpNet>, Vec<IpNet>), RegistryError> {
        let nets = dedup(nets);
        let mut changed = Vec::new();
        let mut leaving = Vec::new();
        let mut still_held = Vec::new();
        for net in &nets {
            let Some(holders) = self.held.get(&(side, *net)) else {
                if self.present(side, net) {
                    still_held.push(*net);
                }
                continue;
            };
            let remaining = holders
                .iter()
                .filter(|h| source.is_some_and(|s| h.source != s))
                .count();
            if remaining == holders.len() {
                still_held.push(*net);
                continue;
            }
            changed.push(*net);
            let fed = side == Side::Block && self.feeds.values().any(|f| f.nets.contains(net));
            if remaining == 0 && !fed {
                leaving.push(*net);
            } else {
                still_held.push(*net);
            }
        }
        delete(shield, side, &leaving)?;
        let records: Vec<Record> = changed
            .iter()
            .map(|n| Record::Remove {
                side,
                net: *n,
                source: source.map(str::to_string),
            })
            .collect();
        if let Err(e) = self.journal.append(&records) {
            if let Err(undo) = insert(shield, side, &leaving) {
                log::error!("undoing a removal the journal refused: {undo}");
            }
            return Err(e.into());
        }
        for net in &changed {
            self.apply(Record::Remove {
                side,
                net: *net,
                source: source.map(str::to_string),
            });
        }
        Ok((leaving, still_held))
    }

    /// Removes at most `max` holds whose time has come, in one map batch and one journal write.
    /// Returns the entries that left their map; call again while it returns `max` holds' worth.
    pub fn expire(
        &mut self,
        shield: &mut Shield,
        now: u64,
        max: usize,
    ) -> Result<(Vec<(Side, IpNet)>, usize), RegistryError> {
        let due: Vec<(Side, IpNet, String)> = self
            .held
            .iter()
            .flat_map(|((side, net), holders)| {
                holders
                    .iter()
                    .filter(|h| h.expires.is_some_and(|t| t <= now))
                    .map(|h| (*side, *net, h.source.clone()))
            })
            .take(max)
            .collect();
        let records: Vec<Record> = due
            .iter()
            .map(|(side, net, source)| Record::Remove {
                side: *side,
                net: *net,
                source: Some(source.clone()),
            })
            .collect();
        // The holders of just the due entries, as they will be: who is left decides what
        // leaves the map.
        let mut after: BTreeMap<(Side, IpNet), Vec<Holder>> = due
            .iter()
            .filter_map(|(s, n, _)| self.held.get(&(*s, *n)).map(|h| ((*s, *n), h.clone())))
            .collect();
        for r in &records {
            apply_record(&mut after, r.clone());
        }
        let mut gone = Vec::new();
        for side in [Side::Block, Side::Allow] {
            let mut leaving: Vec<IpNet> = due
                .iter()
                .filter(|(s, net, _)| {
                    *s == side
                        && !after.contains_key(&(side, *net))
                        && !(side == Side::Block
                            && self.feeds.values().any(|f| f.nets.contains(net)))
                })
                .map(|(_, n, _)| *n)
                .collect();
            leaving.sort();
            leaving.dedup();
            delete(shield, side, &leaving)?;
            gone.extend(leaving.into_iter().map(|n| (side, n)));
        }
        // Map first: if the journal write fails the holds are still recorded, and the next
        // start (or the next tick) expires them again.
        self.journal.append(&records)?;
        for r in records {
            self.apply(r);
        }
        Ok((gone, due.len()))
    }

    /// Replaces feed `name`'s set with `parsed`, with no gap: new entries go in first, stale ones
    /// leave after. Refused as a whole, with the old set kept in force, when the guard refuses
    /// an entry, when the change is larger than `policy.max_change` allows, or when a map or
    /// the cache cannot take it.
    pub fn replace_feed(
        &mut self,
        shield: &mut Shield,
        name: &str,
        url: &str,
        format: FeedFormat,
        parsed: &ParsedFeed,
        policy: FeedPolicy,
    ) -> Result<(usize, usize), RegistryError> {
        let refuse = |why: String| RegistryError::FeedRefused {
            feed: name.to_string(),
            why,
        };
        let new: HashSet<IpNet> = parsed.nets.iter().copied().collect();
        let allowed = self.allowed();
        let refusals: Vec<Refusal> = parsed
            .nets
            .iter()
            .filter_map(|n| self.guard.check(n, &allowed, policy.guard).err())
            .collect();
        if !refusals.is_empty() {
            self.count_refusals("feed", refusals.len());
            let why = refusals_text(&refusals);
            return Err(refuse(format!(
                "{} entr{} refused by the lockout guard: {why}",
                refusals.len(),
                if refusals.len() == 1 { "y" } else { "ies" }
            )));
        }
        let old_len = self.feeds.get(name).map_or(0, |f| f.nets.len());
        if let (Some(max), Some(old)) = (policy.max_change, self.feeds.get(name)) {
            if old_len > 0 {
                let added = new.difference(&old.nets).count();
                let removed = old.nets.difference(&new).count();
                let share = (added + removed) as f64 / old_len as f64;
                if share > max {
                    self.count_refusals("feed", 1);
                    return Err(refuse(format!(
                        "it would add {added} and remove {removed} of {old_len} entries \
                         ({:.0}% > max_change {:.0}%)",
                        share * 100.0,
                        max * 100.0
                    )));
                }
            }
        }
        let cache = self.state_dir.join("feeds").join(format!("{name}.list"));
        let to_add: Vec<IpNet> = parsed
            .nets
            .iter()
            .filter(|n| !self.present(Side::Block, n))
            .copied()
            .collect();
        shield.block_all(&to_add)?;
        // Cache only after the maps accepted it: a restart then rebuilds exactly this set. A
        // cache that cannot be written undoes the maps: entries no record accounts for would
        // otherwise come back as `adopted` and stay for ever.
        if let Err(e) = write_feed_cache(&cache, url, format, &parsed.nets) {
            if let Err(undo) = shield.unblock_all(&to_add) {
                log::error!("undoing feed {name} after its cache failed: {undo}");
            }
            return Err(e);
        }
        let now = now_unix();
        let old = self
            .feeds
            .insert(
                name.to_string(),
                FeedSet::new(
                    new,
                    FeedStatus {
                        name: name.to_string(),
                        url: url.to_string(),
                        format,
                        entries: parsed.nets.len() as u64,
                        last_attempt: Some(now),
                        last_success: Some(now),
                        error: None,
                        refused: self.feeds.get(name).map_or(0, |f| f.status.refused),
                    },
                ),
            )
            .map(|f| f.nets)
            .unwrap_or_default();
        let stale: Vec<IpNet> = old
            .into_iter()
            .filter(|n| !self.present(Side::Block, n))
            .collect();
        shield.unblock_all(&stale)?;
        Ok((to_add.len(), stale.len()))
    }

    /// Records a failed refresh; the feed's previous set stays in force.
    pub fn feed_failed(
        &mut self,
        name: &str,
        url: &str,
        format: FeedFormat,
        error: String,
        refused: bool,
    ) {
        let feed = self.feeds.entry(name.to_string()).or_insert_with(|| {
            FeedSet::new(
                HashSet::new(),
                FeedStatus {
                    name: name.into(),
                    url: url.into(),
                    format,
                    ..Default::default()
                },
            )
        });
        feed.status.last_attempt = Some(now_unix());
        feed.status.error = Some(error);
        if refused {
            feed.status.refused += 1;
        }
    }

    /// Drops feeds that are no longer configured (their entries leave the maps unless held).
    pub fn retain_feeds(
        &mut self,
        shield: &mut Shield,
        keep: &[String],
    ) -> Result<(), RegistryError> {
        let gone: Vec<String> = self
            .feeds
            .keys()
            .filter(|n| !keep.contains(n))
            .cloned()
            .collect();
        for name in gone {
            let feed = self.feeds.remove(&name).expect("listed above");
            let stale: Vec<IpNet> = feed
                .nets
                .into_iter()
                .filter(|n| !self.present(Side::Block, n))
                .collect();
            shield.unblock_all(&stale)?;
            let _ = std::fs::remove_file(self.state_dir.join("feeds").join(format!("{name}.list")));
            log::info!("feed {name} is no longer configured: its entries were removed");
        }
        Ok(())
    }

    pub fn feed_statuses(&self) -> Vec<FeedStatus> {
        self.feeds.values().map(|f| f.status.clone()).collect()
    }

    /// Every holder of an entry, feeds included.
    pub fn holders(&self, side: Side, net: &IpNet) -> Vec<Holder> {
        let mut out = self.held.get(&(side, *net)).cloned().unwrap_or_default();
        if side == Side::Block {
            for (name, feed) in &self.feeds {
                if feed.nets.contains(net) {
                    out.push(Holder {
                        source: Source::Feed(name.clone()).to_string(),
                        reason: None,
                        created: feed.status.last_success.unwrap_or(0),
                        expires: None,
                    });
                }
            }
        }
        out
    }

    /// The hits of `blocked` (as read from the maps) summed by each holder's source
    /// (`feed:<name>`, `app:<name>`, `api`, `auto-ban`, ...). Every feed is there, at 0 when
    /// nothing it holds was hit; an entry two sources hold counts for both. Only entries that
    /// were hit are looked up, so a million quiet entries cost a walk and no lookups.
    pub fn drops_by_origin(&self, blocked: &[ListEntry]) -> BTreeMap<String, u64> {
        let feeds: Vec<(String, &FeedSet)> = self
            .feeds
            .iter()
            .map(|(name, set)| (Source::Feed(name.clone()).to_string(), set))
            .collect();
        let mut out: BTreeMap<String, u64> = feeds
            .iter()
            .map(|(origin, _)| (origin.clone(), 0))
            .collect();
        for e in blocked.iter().filter(|e| e.hits > 0) {
            for h in self.held.get(&(Side::Block, e.net)).into_iter().flatten() {
                *out.entry(h.source.clone()).or_default() += e.hits;
            }
            for (origin, set) in &feeds {
                if set.nets.contains(&e.net) {
                    *out.entry(origin.clone()).or_default() += e.hits;
                }
            }
        }
        out
    }

    /// Number of entries per (side, source, family), for metrics. An entry with two holders
    /// counts under both sources.
    pub fn counts(&self) -> BTreeMap<(Side, String, Family), u64> {
        let mut out: BTreeMap<(Side, String, Family), u64> = self
            .tally
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        for feed in self.feeds.values() {
            for (fam, n) in [
                (Family::V4, feed.v4),
                (Family::V6, feed.nets.len() - feed.v4),
            ] {
                if n > 0 {
                    *out.entry((Side::Block, "feed".to_string(), fam))
                        .or_default() += n as u64;
                }
            }
        }
        out
    }

    /// Entries with holders and hits; `side`/`source` filter, at most `limit`. Walks the
    /// registry and looks up only the entries it returns, so it stays fast at a million entries.
    pub fn entries(
        &self,
        shield: &Shield,
        side: Option<Side>,
        source: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntryView>, RegistryError> {
        let now_ns = coarse_now_ns();
        let matches_source = |holders: &[Holder]| {
            source.is_none_or(|want| {
                holders
                    .iter()
                    .any(|h| Source::parse(&h.source).matches_filter(want))
            })
        };
        let mut keys: Vec<(Side, IpNet)> = self.held.keys().copied().collect();
        let mut fed: Vec<IpNet> = self
            .feeds
            .values()
            .flat_map(|f| f.nets.iter().copied())
            .filter(|n| !self.held.contains_key(&(Side::Block, *n)))
            .collect();
        fed.sort();
        fed.dedup();
        keys.extend(fed.into_iter().map(|n| (Side::Block, n)));
        let mut out = Vec::new();
        for (s, net) in keys {
            if out.len() >= limit {
                break;
            }
            if side.is_some_and(|want| want != s) {
                continue;
            }
            let holders = self.holders(s, &net);
            if !matches_source(&holders) {
                continue;
            }
            let stats = match s {
                Side::Block => shield.blocked_entry(net)?,
                Side::Allow => shield.allowed_entry(net)?,
            };
            let stats = stats.unwrap_or(ListEntry {
                net,
                hits: 0,
                last_hit_ns: 0,
            });
            out.push(view(s, stats, holders, now_ns));
        }
        Ok(out)
    }

    /// The longest entry on `side` covering `addr`, and whether an exact entry exists, found
    /// with one registry lookup per prefix length.
    pub(crate) fn covering(&self, side: Side, addr: IpAddr) -> Vec<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max)
            .rev()
            .filter_map(|len| IpNet::new(addr, len).ok().map(|n| n.trunc()))
            .filter(|n| self.present(side, n))
            .collect()
    }

    /// What the XDP program would do with packets from `addr`, and which entry decides it. The
    /// decision is the kernel's own function (`groundzero_common::verdict::decide_addr`) asked
    /// over the registry's lists, so `why` cannot drift from the kernel's rule order.
    pub fn why(&self, shield: &Shield, addr: IpAddr) -> Result<Why, RegistryError> {
        let monitor = shield.monitor()?;
        let now_ns = coarse_now_ns();
        let show = |side: Side, net: IpNet| -> Result<EntryView, RegistryError> {
            let stats = match side {
                Side::Block => shield.blocked_entry(net)?,
                Side::Allow => shield.allowed_entry(net)?,
            }
            .unwrap_or(ListEntry {
                net,
                hits: 0,
                last_hit_ns: 0,
            });
            Ok(view(side, stats, self.holders(side, &net), now_ns))
        };
        let allows = self.covering(Side::Allow, addr);
        let blocks = self.covering(Side::Block, addr);
        let lists = CoveringLists {
            allowed: !allows.is_empty(),
            exact: blocks.first().is_some_and(groundzero::lists::is_exact_net),
            cidr: blocks.iter().any(|b| !groundzero::lists::is_exact_net(b)),
        };
        let reason = match addr {
            IpAddr::V4(a) => decide_addr(&a.octets(), &lists, monitor),
            IpAddr::V6(a) => decide_addr(&a.octets(), &lists, monitor),
        };
        let decided = match reason {
            Reason::Allowlisted => allows.first().map(|a| (Side::Allow, *a)),
            Reason::BlockedExact | Reason::MonitorExact => {
                blocks.first().map(|b| (Side::Block, *b))
            }
            Reason::BlockedCidr | Reason::MonitorCidr => blocks
                .iter()
                .find(|b| !groundzero::lists::is_exact_net(b))
                .map(|b| (Side::Block, *b)),
            _ => None,
        };
        let matched = decided.map(|(side, net)| show(side, net)).transpose()?;
        let also_matching = blocks
            .into_iter()
            .filter(|b| decided.is_none_or(|(_, d)| d != *b))
            .map(|b| show(Side::Block, b))
            .collect::<Result<_, _>>()?;
        Ok(Why {
            address: addr,
            verdict: reason.action(),
            reason,
            monitor,
            matched,
            also_matching,
        })
    }
}

/// The answers of the registry's lists for one address, as the verdict function asks them.
/// The rate limit is not a list: `why` describes the lists (a rate-limited source is one no
/// list decided).
struct CoveringLists {
    allowed: bool,
    exact: bool,
    cidr: bool,
}

impl<A> Lists<A> for CoveringLists {
    fn allowed(&self, _: &A) -> bool {
        self.allowed
    }
    fn blocked_exact(&self, _: &A) -> bool {
        self.exact
    }
    fn blocked_cidr(&self, _: &A) -> bool {
        self.cidr
    }
    fn over_rate(&self, _: &A) -> bool {
        false
    }
}

fn live_records(held: &BTreeMap<(Side, IpNet), Vec<Holder>>) -> Vec<Record> {
    held.iter()
        .flat_map(|((side, net), holders)| {
            holders.iter().map(|h| Record::Add {
                side: *side,
                net: *net,
                holder: h.clone(),
            })
        })
        .collect()
}

fn view(side: Side, e: ListEntry, holders: Vec<Holder>, now_ns: u64) -> EntryView {
    EntryView {
        entry: e.net,
        list: side,
        kind: if groundzero::lists::is_exact_net(&e.net) && side == Side::Block {
            EntryKind::Exact
        } else {
            EntryKind::Prefix
        },
        holders: holders.iter().map(crate::wire::holder).collect(),
        hits: e.hits,
        last_hit_seconds_ago: (e.last_hit_ns > 0)
            .then(|| now_ns.saturating_sub(e.last_hit_ns) as f64 / 1e9),
    }
}

/// CLOCK_MONOTONIC_COARSE, the clock the XDP program stamps hits with.
fn coarse_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn apply_record(held: &mut BTreeMap<(Side, IpNet), Vec<Holder>>, record: Record) {
    match record {
        Record::Add { side, net, holder } => {
            let holders = held.entry((side, net)).or_default();
            holders.retain(|h| h.source != holder.source);
            holders.push(holder);
        }
        Record::Remove { side, net, source } => {
            if let Some(holders) = held.get_mut(&(side, net)) {
                holders.retain(|h| source.as_ref().is_some_and(|s| &h.source != s));
                if holders.is_empty() {
                    held.remove(&(side, net));
                }
            }
        }
    }
}

const CACHE_HEADER: &str = "# groundzero feed cache";

fn write_feed_cache(
    path: &Path,
    url: &str,
    format: FeedFormat,
    nets: &[IpNet],
) -> Result<(), RegistryError> {
    let err = |source| RegistryError::Cache {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::with_capacity(nets.len() * 20 + 128);
    text.push_str(&format!(
        "{CACHE_HEADER}\n# url={url}\n# format={}\n",
        serde_json::to_string(&format)
            .unwrap_or_default()
            .trim_matches('"')
    ));
    for n in nets {
        text.push_str(&n.to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn load_feed_caches(dir: &Path) -> BTreeMap<String, FeedSet> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".list"))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut url = String::new();
        let mut format = FeedFormat::Plain;
        let mut nets = HashSet::new();
        for line in text.lines() {
            if let Some(u) = line.strip_prefix("# url=") {
                url = u.to_string();
            } else if let Some(f) = line.strip_prefix("# format=") {
                format = serde_json::from_str(&format!("\"{f}\"")).unwrap_or_default();
            } else if let Ok(n) = groundzero::parse_entry(line) {
                // The same strict parser as every other input: a cache edited by hand (or
                // damaged) cannot widen or misread an entry.
                nets.insert(n);
            }
        }
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let status = FeedStatus {
            name: name.to_string(),
            url,
            format,
            entries: nets.len() as u64,
            refused: 0,
            last_attempt: None,
            last_success: modified,
            error: None,
        };
        out.insert(name.to_string(), FeedSet::new(nets, status));
    }
    out
}
