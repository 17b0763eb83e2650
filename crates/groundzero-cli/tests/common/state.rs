//! What the daemon holds, read three independent ways: the API's `/v1/entries`, the pinned
//! kernel maps, and a replay of the journal file. The first two and the raw HTTP/1.1 exchange
//! over the API socket (for tests that must see bad answers and dropped connections as they
//! are) are the lab harness's; the journal is read here, with the daemon crate's own reader.
use std::{collections::BTreeSet, path::Path};

// Each test binary uses a part of these.
use groundzero_lab::harness::PinnedMaps;
#[allow(unused_imports)]
pub use groundzero_lab::harness::{
    entries::{api_view, keys, without_created, Hold, Key, View},
    http::{exchange, request, Response},
};

/// The pinned maps under `pin_dir` ([`PinnedMaps`]), panicking with context on a failure.
pub struct Kernel(PinnedMaps);

impl Kernel {
    /// Only while the maps exist (a daemon has pinned them): opening creates missing ones.
    pub fn open(pin_dir: &Path) -> Self {
        Self(PinnedMaps::open(pin_dir).unwrap_or_else(|e| panic!("{e}: {e:?}")))
    }

    pub fn keys(&self) -> BTreeSet<Key> {
        self.0.keys().expect("reading the list maps")
    }

    /// The blocklist's prefixes (exact and prefix maps, both families).
    pub fn blocked(&self) -> BTreeSet<groundzero::IpNet> {
        self.keys()
            .into_iter()
            .filter(|(list, _)| list == "block")
            .map(|(_, n)| n)
            .collect()
    }

    /// Removes `key` from the maps behind the daemon's back: only to repair a state a test
    /// has already reported (an entry the daemon left in a map without a record).
    pub fn remove(&mut self, key: &Key) {
        let _ = self.0.remove(key);
    }

    pub fn monitor(&self) -> bool {
        self.0.monitor().expect("reading the config map")
    }
}

/// The state the journal in `state_dir` describes: its intact records replayed in order (an add
/// replaces the same source's hold; a remove drops one source's hold, or every non-feed hold).
/// A torn last frame (a kill mid-append) is skipped, as the daemon's recovery skips it; the
/// records are read with the daemon's own frame reader, without changing anything.
pub fn journal_view(state_dir: &Path) -> Result<View, String> {
    use groundzero_daemon::journal::{read_only, Record};
    let (records, _damaged) = read_only(state_dir).map_err(|e| e.to_string())?;
    let mut view = View::new();
    for record in records {
        match record {
            Record::Add { side, net, holder } => {
                let key = (side_name(side), net);
                view.entry(key).or_default().insert(
                    holder.source.clone(),
                    Hold {
                        reason: holder.reason.clone(),
                        expires: holder.expires,
                        created: holder.created,
                    },
                );
            }
            Record::Remove { side, net, source } => {
                let key = (side_name(side), net);
                if let Some(holders) = view.get_mut(&key) {
                    match source {
                        Some(s) => {
                            holders.remove(&s);
                        }
                        None => holders.retain(|s, _| s.starts_with("feed:")),
                    }
                    if holders.is_empty() {
                        view.remove(&key);
                    }
                }
            }
        }
    }
    Ok(view)
}

fn side_name(side: groundzero_daemon::registry::Side) -> String {
    match side {
        groundzero_daemon::registry::Side::Block => "block".into(),
        groundzero_daemon::registry::Side::Allow => "allow".into(),
    }
}

/// The journal's size in bytes (both the framed and a legacy file).
pub fn journal_bytes(state_dir: &Path) -> u64 {
    ["journal.gzj", "journal.jsonl"]
        .iter()
        .filter_map(|f| std::fs::metadata(state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
