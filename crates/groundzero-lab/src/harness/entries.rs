//! What a daemon holds, read independently of it: its API's `/v1/entries` as a [`View`], and
//! the kernel maps it pinned ([`PinnedMaps`]). (Its journal is read by the tests, with the
//! daemon crate's own frame reader.)
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use groundzero::{IpNet, Shield, ShieldOptions};
use serde_json::Value;

use super::HarnessError;

/// One holder of an entry, as the API shows it (and the journal records it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Why it is held.
    pub reason: Option<String>,
    /// When it expires (Unix seconds), if it does.
    pub expires: Option<u64>,
    /// When it was made (Unix seconds).
    pub created: u64,
}

/// `("block" | "allow", entry)`.
pub type Key = (String, IpNet);
/// Every entry with its holders by source.
pub type View = BTreeMap<Key, BTreeMap<String, Hold>>;

/// The entries of a view, without holders (what the kernel maps can be compared with).
pub fn keys(view: &View) -> BTreeSet<Key> {
    view.keys().cloned().collect()
}

/// The view without `created` (which a restart or a replacement may legitimately change).
pub fn without_created(view: &View) -> View {
    view.iter()
        .map(|(k, hs)| {
            let hs = hs
                .iter()
                .map(|(s, h)| {
                    (
                        s.clone(),
                        Hold {
                            created: 0,
                            ..h.clone()
                        },
                    )
                })
                .collect();
            (k.clone(), hs)
        })
        .collect()
}

/// Parses one entry view (`/v1/entries` element) into the view.
fn add_entry_json(view: &mut View, e: &Value) -> Result<(), String> {
    let list = e["list"].as_str().ok_or(format!("no list in {e}"))?;
    let net: IpNet = e["entry"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad entry in {e}"))?;
    let holders = view.entry((list.to_string(), net)).or_default();
    for h in e["holders"]
        .as_array()
        .ok_or(format!("no holders in {e}"))?
    {
        let source = h["source"].as_str().ok_or(format!("no source in {h}"))?;
        holders.insert(
            source.to_string(),
            Hold {
                reason: h["reason"].as_str().map(str::to_string),
                expires: h["expires"].as_u64(),
                created: h["created"].as_u64().unwrap_or(0),
            },
        );
    }
    Ok(())
}

/// Everything `/v1/entries` lists (both lists, no limit that could bite).
pub fn api_view(socket: &Path) -> Result<View, String> {
    let r = super::http::request(socket, "GET", "/v1/entries?limit=1000000", None)
        .ok_or("GET /v1/entries: no answer")?;
    if r.status != 200 {
        return Err(format!("GET /v1/entries: {} {}", r.status, r.text()));
    }
    let v = r.json().ok_or("GET /v1/entries: not JSON")?;
    let mut view = View::new();
    for e in v["entries"].as_array().ok_or("no `entries` array")? {
        add_entry_json(&mut view, e)?;
    }
    Ok(view)
}

fn maps_error(e: groundzero::Error) -> HarnessError {
    HarnessError::ReadMaps(Box::new(e))
}

/// The pinned maps under a pin dir, opened as a daemon left them: a second handle on the same
/// kernel objects, read (and only repaired by [`PinnedMaps::remove`]).
pub struct PinnedMaps {
    shield: Shield,
}

impl PinnedMaps {
    /// Only while the maps exist (a daemon has pinned them): opening creates missing ones.
    pub fn open(pin_dir: &Path) -> Result<Self, HarnessError> {
        let shield = Shield::load(ShieldOptions {
            pin_dir: Some(pin_dir.to_path_buf()),
            ..Default::default()
        })
        .map_err(|source| HarnessError::PinnedMaps {
            pin_dir: PathBuf::from(pin_dir),
            source: Box::new(source),
        })?;
        Ok(Self { shield })
    }

    /// Every entry of both lists.
    pub fn keys(&self) -> Result<BTreeSet<Key>, HarnessError> {
        let blocked = self.shield.blocked().map_err(maps_error)?;
        let allowed = self.shield.allowed().map_err(maps_error)?;
        Ok(blocked
            .into_iter()
            .map(|e| ("block".to_string(), e.net))
            .chain(allowed.into_iter().map(|e| ("allow".to_string(), e.net)))
            .collect())
    }

    /// Removes `key` from the maps behind the daemon's back: only to repair a state a test has
    /// already reported (an entry the daemon left in a map without a record).
    pub fn remove(&mut self, key: &Key) -> Result<bool, HarnessError> {
        if key.0 == "block" {
            self.shield.unblock(key.1)
        } else {
            self.shield.unallow(key.1)
        }
        .map_err(maps_error)
    }

    /// Whether the program only counts what it would drop.
    pub fn monitor(&self) -> Result<bool, HarnessError> {
        self.shield.monitor().map_err(maps_error)
    }

    /// The shield behind the maps, for what else a caller reads.
    pub fn shield(&self) -> &Shield {
        &self.shield
    }
}
