//! The records the registry keeps and the journal writes: which list ([`Side`]), who holds an
//! entry there ([`Holder`]) and how a feed is doing ([`FeedStatus`]). Their own module so the
//! registry and the journal both use them without importing each other.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::feeds::FeedFormat;

/// Which list an entry is on.
// One list vocabulary is coming to groundzero-common; this is the one place to switch.
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
    /// Why, in the holder's words.
    pub reason: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the hold is removed at this time without anyone acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// How a feed (or an API import) is doing: its entries and its last refresh.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeedStatus {
    /// The feed's name from the configuration, or the import's name.
    pub name: String,
    /// Where it is fetched from; `api import` for imports.
    pub url: String,
    pub format: FeedFormat,
    /// Entries the feed currently contributes.
    pub entries: usize,
    /// Unix seconds of the last refresh tried.
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last refresh that succeeded; `None` if none did.
    pub last_success: Option<u64>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
    /// Refreshes refused by the guard or the change limit since the daemon started.
    pub refused: u64,
}

// Sources are strings with a kind prefix (`feed:NAME`, `app:NAME`, `import:NAME`); a typed
// `Source` is coming in groundzero-api. Until then this is where the prefix is read.
/// The kind of a source (`feed:x` → `feed`): bounded label values for metrics.
pub fn source_kind(source: &str) -> &str {
    source.split(':').next().unwrap_or("")
}

/// The clock records are stamped with: Unix seconds now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
