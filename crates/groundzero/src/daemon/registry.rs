//! What is on the lists and why: every entry's holders (who asked for it, with reason, creation
//! time and expiry), kept in step with the BPF maps.
//!
//! An entry is in its map while anyone holds it: a manual or API block, an auto-ban, an
//! application, or one or more feeds. Changes are written to the journal (fsync'd) *before* the
//! map is touched, so an acknowledged change survives `kill -9`; at start the journal, the feed
//! caches and the pinned maps are reconciled, and nothing found in a map is dropped.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    feeds::{FeedFormat, ParsedFeed},
    journal::{self, Journal, JournalError, Record},
};
use crate::{Error as ShieldError, ListEntry, Shield};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Block,
    Allow,
}

/// One reason an entry is on a list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// `manual`, `api`, `feed:<name>`, `auto-ban`, `app:<name>`, or `adopted` (found in a
    /// pinned map with no record, e.g. written by another tool while the daemon was down).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the hold is removed at this time without anyone acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedStatus {
    pub name: String,
    pub url: String,
    pub format: FeedFormat,
    pub entries: usize,
    /// Prefixes with host bits set in the last good copy, stored normalised.
    pub normalised: usize,
    pub last_attempt: Option<u64>,
    pub last_success: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
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
}

/// An entry as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    pub entry: IpNet,
    pub list: Side,
    /// `exact` (hash) or `prefix` (LPM trie).
    pub kind: &'static str,
    pub holders: Vec<Holder>,
    pub hits: u64,
    /// Seconds since the last hit, if it was ever hit.
    pub last_hit_seconds_ago: Option<f64>,
}

/// The answer to "what happens to packets from this address, and why".
#[derive(Clone, Debug, Serialize)]
pub struct Why {
    pub address: IpAddr,
    /// `pass` or `drop` (or `pass` with `would_drop` in monitor mode).
    pub verdict: &'static str,
    /// The counter reason the XDP program would use.
    pub reason: &'static str,
    pub monitor: bool,
    /// The entry that decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<EntryView>,
    /// Block entries that also cover the address but did not decide (e.g. under an allow).
    pub also_matching: Vec<EntryView>,
}

struct FeedSet {
    nets: HashSet<IpNet>,
    status: FeedStatus,
}

pub struct Registry {
    held: BTreeMap<(Side, IpNet), Vec<Holder>>,
    feeds: BTreeMap<String, FeedSet>,
    journal: Journal,
    state_dir: PathBuf,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_exact(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

impl Registry {
    /// Loads the journal and feed caches from `state_dir`, reconciles them with what `shield`'s
    /// (possibly pinned) maps hold, and compacts the journal.
    pub fn open(state_dir: &Path, shield: &mut Shield) -> Result<Self, RegistryError> {
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
        let feeds = load_feed_caches(&state_dir.join("feeds"));

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
        let missing_block: Vec<IpNet> = desired
            .iter()
            .filter(|k| k.0 == Side::Block && !present.contains(k))
            .map(|k| k.1)
            .collect();
        let missing_allow: Vec<IpNet> = desired
            .iter()
            .filter(|k| k.0 == Side::Allow && !present.contains(k))
            .map(|k| k.1)
            .collect();
        shield.allow_all(&missing_allow)?;
        shield.block_all(&missing_block)?;
        if !missing_block.is_empty() || !missing_allow.is_empty() {
            log::info!(
                "restored {} blocked and {} allowed entries from the journal and feed caches",
                missing_block.len(),
                missing_allow.len()
            );
        }
        let now = now_unix();
        let mut adopted = 0;
        for key in present.difference(&desired) {
            held.entry(*key).or_default().push(Holder {
                source: "adopted".into(),
                reason: Some("found in the pinned map with no record".into()),
                created: now,
                expires: None,
            });
            adopted += 1;
        }
        if adopted > 0 {
            log::warn!("adopted {adopted} map entries that had no record (source \"adopted\")");
        }

        let live: Vec<Record> = held
            .iter()
            .flat_map(|((side, net), holders)| {
                holders.iter().map(|h| Record::Add {
                    side: *side,
                    net: *net,
                    holder: h.clone(),
                })
            })
            .collect();
        let journal = Journal::rewrite(state_dir, &live)?.with_damage(recovered.damage);
        Ok(Self {
            held,
            feeds,
            journal,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Is `net` in its map (held by anyone)?
    pub fn present(&self, side: Side, net: &IpNet) -> bool {
        self.held.contains_key(&(side, *net))
            || (side == Side::Block && self.feeds.values().any(|f| f.nets.contains(net)))
    }

    /// Adds `holder`'s hold on every net (replacing an earlier hold by the same source). All or
    /// nothing: if the map refuses one (full), none of the new ones stay.
    pub fn add(
        &mut self,
        shield: &mut Shield,
        side: Side,
        nets: &[IpNet],
        holder: &Holder,
    ) -> Result<usize, RegistryError> {
        let records: Vec<Record> = nets
            .iter()
            .map(|n| Record::Add {
                side,
                net: *n,
                holder: holder.clone(),
            })
            .collect();
        self.journal.append(&records)?;
        let new: Vec<IpNet> = nets
            .iter()
            .filter(|n| !self.present(side, n))
            .copied()
            .collect();
        let inserted = match side {
            Side::Block => shield.block_all(&new),
            Side::Allow => shield.allow_all(&new),
        };
        if let Err(e) = inserted {
            let undo: Vec<Record> = nets
                .iter()
                .map(|n| Record::Remove {
                    side,
                    net: *n,
                    source: Some(holder.source.clone()),
                })
                .collect();
            // The maps were rolled back by block_all; make the journal say so too.
            self.journal.append(&undo)?;
            return Err(e.into());
        }
        for net in nets {
            let holders = self.held.entry((side, *net)).or_default();
            holders.retain(|h| h.source != holder.source);
            holders.push(holder.clone());
        }
        Ok(new.len())
    }

    /// Removes holds on `nets`: only `source`'s, or every non-feed hold if `None`. An entry
    /// leaves its map when nobody holds it any more. Returns (left the map, still held by feeds).
    pub fn remove(
        &mut self,
        shield: &mut Shield,
        side: Side,
        nets: &[IpNet],
        source: Option<&str>,
    ) -> Result<(Vec<IpNet>, Vec<IpNet>), RegistryError> {
        let records: Vec<Record> = nets
            .iter()
            .map(|n| Record::Remove {
                side,
                net: *n,
                source: source.map(str::to_string),
            })
            .collect();
        self.journal.append(&records)?;
        let mut removed = Vec::new();
        let mut still_held = Vec::new();
        for net in nets {
            let was_present = self.present(side, net);
            if let Some(holders) = self.held.get_mut(&(side, *net)) {
                holders.retain(|h| source.is_some_and(|s| h.source != s));
                if holders.is_empty() {
                    self.held.remove(&(side, *net));
                }
            }
            if was_present && !self.present(side, net) {
                match side {
                    Side::Block => shield.unblock(*net)?,
                    Side::Allow => shield.unallow(*net)?,
                };
                removed.push(*net);
            } else if self.present(side, net) {
                still_held.push(*net);
            }
        }
        Ok((removed, still_held))
    }

    /// Removes every hold whose time has come. Returns the entries that left their map.
    pub fn expire(
        &mut self,
        shield: &mut Shield,
        now: u64,
    ) -> Result<Vec<(Side, IpNet)>, RegistryError> {
        let due: Vec<(Side, IpNet, String)> = self
            .held
            .iter()
            .flat_map(|((side, net), holders)| {
                holders
                    .iter()
                    .filter(|h| h.expires.is_some_and(|t| t <= now))
                    .map(|h| (*side, *net, h.source.clone()))
            })
            .collect();
        let mut gone = Vec::new();
        for (side, net, source) in due {
            let (removed, _) = self.remove(shield, side, &[net], Some(&source))?;
            gone.extend(removed.into_iter().map(|n| (side, n)));
        }
        Ok(gone)
    }

    /// Replaces feed `name`'s set with `parsed`, with no gap: new entries go in first, stale ones
    /// leave after. On failure (a full map) the old set stays in force.
    pub fn replace_feed(
        &mut self,
        shield: &mut Shield,
        name: &str,
        url: &str,
        format: FeedFormat,
        parsed: &ParsedFeed,
    ) -> Result<(usize, usize), RegistryError> {
        let cache = self.state_dir.join("feeds").join(format!("{name}.list"));
        let t0 = std::time::Instant::now();
        let new: HashSet<IpNet> = parsed.nets.iter().copied().collect();
        let to_add: Vec<IpNet> = new
            .iter()
            .filter(|n| !self.present(Side::Block, n))
            .copied()
            .collect();
        let t1 = std::time::Instant::now();
        shield.block_all(&to_add)?;
        let t2 = std::time::Instant::now();
        // Cache only after the maps accepted it: a restart then rebuilds exactly this set.
        write_feed_cache(&cache, url, format, &parsed.nets)?;
        log::debug!(
            "feed {name}: diff {:?}, maps {:?}, cache {:?}",
            t1 - t0,
            t2 - t1,
            t2.elapsed()
        );
        let old = self
            .feeds
            .insert(
                name.to_string(),
                FeedSet {
                    nets: new,
                    status: FeedStatus {
                        name: name.to_string(),
                        url: url.to_string(),
                        format,
                        entries: parsed.nets.len(),
                        normalised: parsed.normalised,
                        last_attempt: Some(now_unix()),
                        last_success: Some(now_unix()),
                        error: None,
                    },
                },
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
    pub fn feed_failed(&mut self, name: &str, url: &str, format: FeedFormat, error: String) {
        let feed = self
            .feeds
            .entry(name.to_string())
            .or_insert_with(|| FeedSet {
                nets: HashSet::new(),
                status: FeedStatus {
                    name: name.into(),
                    url: url.into(),
                    format,
                    ..Default::default()
                },
            });
        feed.status.last_attempt = Some(now_unix());
        feed.status.error = Some(error);
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
                        source: format!("feed:{name}"),
                        reason: None,
                        created: feed.status.last_success.unwrap_or(0),
                        expires: None,
                    });
                }
            }
        }
        out
    }

    /// Number of entries per (side, source, family), for metrics. An entry with two holders
    /// counts under both sources.
    pub fn counts(&self) -> BTreeMap<(Side, String, &'static str), u64> {
        let mut out = BTreeMap::new();
        let family = |n: &IpNet| {
            if matches!(n, IpNet::V4(_)) {
                "ipv4"
            } else {
                "ipv6"
            }
        };
        for ((side, net), holders) in &self.held {
            for h in holders {
                let source = h.source.split(':').next().unwrap_or("").to_string();
                *out.entry((*side, source, family(net))).or_default() += 1;
            }
        }
        for feed in self.feeds.values() {
            for net in &feed.nets {
                *out.entry((Side::Block, "feed".to_string(), family(net)))
                    .or_default() += 1;
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
                    .any(|h| h.source == want || h.source.starts_with(&format!("{want}:")))
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
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The longest entry on `side` covering `addr`, exact host first for blocks (the XDP
    /// program's order), found with one registry lookup per prefix length.
    fn covering(&self, side: Side, addr: IpAddr) -> Vec<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max)
            .rev()
            .filter_map(|len| IpNet::new(addr, len).ok().map(|n| n.trunc()))
            .filter(|n| self.present(side, n))
            .collect()
    }

    /// What the XDP program would do with packets from `addr`, and which entry decides it.
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
        let exact = blocks.iter().find(|b| is_exact(b)).copied();
        let prefix = blocks.iter().find(|b| !is_exact(b)).copied();
        let (reason, decided) = if let Some(a) = allows.first() {
            ("allowlisted", Some((Side::Allow, *a)))
        } else if let Some(e) = exact {
            (
                if monitor {
                    "monitor_exact"
                } else {
                    "blocked_exact"
                },
                Some((Side::Block, e)),
            )
        } else if let Some(p) = prefix {
            (
                if monitor {
                    "monitor_cidr"
                } else {
                    "blocked_cidr"
                },
                Some((Side::Block, p)),
            )
        } else {
            ("no_match", None)
        };
        let verdict = if reason.starts_with("blocked") {
            "drop"
        } else {
            "pass"
        };
        let matched = decided.map(|(side, net)| show(side, net)).transpose()?;
        let also_matching = blocks
            .into_iter()
            .filter(|b| decided.is_none_or(|(_, d)| d != *b))
            .map(|b| show(Side::Block, b))
            .collect::<Result<_, _>>()?;
        Ok(Why {
            address: addr,
            verdict,
            reason,
            monitor,
            matched,
            also_matching,
        })
    }
}

fn view(side: Side, e: ListEntry, holders: Vec<Holder>, now_ns: u64) -> EntryView {
    EntryView {
        entry: e.net,
        list: side,
        kind: if is_exact(&e.net) && side == Side::Block {
            "exact"
        } else {
            "prefix"
        },
        holders,
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
            } else if let Ok(n) = line.parse::<IpNet>() {
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
            entries: nets.len(),
            normalised: 0,
            last_attempt: None,
            last_success: modified,
            error: None,
        };
        out.insert(name.to_string(), FeedSet { nets, status });
    }
    out
}
