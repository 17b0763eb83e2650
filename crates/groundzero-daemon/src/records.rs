//! The records the registry keeps and the journal writes: which list ([`Side`]), who holds an
//! entry there ([`Holder`]) and how a feed is doing ([`FeedStatus`]). Their own module so the
//! registry and the journal both use them without importing each other.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Which list an entry is on: the common list vocabulary's (its serde form, `block`/`allow`,
/// is what the journal stores).
pub use groundzero::lists::Side;

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

/// How a feed (or an API import) is doing: its entries and its last refresh. The API's type:
/// the registry keeps it as `GET /v1/feeds` shows it, and metrics read it from there.
pub use groundzero_api::feeds::FeedStatus;

/// The kind of a source (`feed:x` → `feed`), read by [`groundzero_api::Source`]: bounded label
/// values for metrics (a source of no known form counts as `other`). Holders keep their source
/// as text: that is what the journal stores.
pub fn source_kind(source: &str) -> &'static str {
    groundzero_api::Source::parse(source).kind().label()
}

/// The clock records are stamped with: Unix seconds now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
