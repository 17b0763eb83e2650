//! Feeds and imports: `GET /v1/feeds`, `POST /v1/feeds/{name}/refresh`, `POST /v1/import`.

use serde::{Deserialize, Serialize};

crate::labels::label_enum! {
    /// The format of a feed or an import.
    #[derive(Default)]
    pub enum FeedFormat as "feed format" {
        /// One address or prefix per line; `#` and `;` comments.
        #[default]
        Plain => "plain",
        /// Spamhaus DROP / EDROP text: `prefix ; SBL id`, `;` comments. Every line must be a
        /// prefix.
        Spamhaus => "spamhaus",
        /// FireHOL netset: one address or prefix per line, `#` comments.
        Firehol => "firehol",
    }
}

/// The status of one configured feed or import (`url` is `api import` for imports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStatus {
    /// Entries in its current set.
    pub entries: u64,
    /// Why the last refresh failed; the previous set stays in force.
    pub error: Option<String>,
    /// Its format.
    pub format: FeedFormat,
    /// Unix seconds of the last refresh attempt.
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last successful refresh.
    pub last_success: Option<u64>,
    /// Its name (its entries are held by `feed:<name>`).
    pub name: String,
    /// Refreshes refused by the guard or the change limit since the daemon started.
    pub refused: u64,
    /// Where it is fetched from, or `api import`.
    pub url: String,
}

impl FeedStatus {
    /// The `url` of an import's status.
    pub const IMPORT_URL: &'static str = "api import";

    /// Is this an import (rather than a configured feed)?
    pub fn is_import(&self) -> bool {
        self.url == Self::IMPORT_URL
    }

    /// The last refresh succeeded (and there was one).
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.last_success.is_some()
    }
}

/// The reply to `GET /v1/feeds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedsReply {
    /// The CrowdSec bouncer and watcher, the fleet's shared feed; absent when `[crowdsec]` is
    /// not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<crate::crowdsec::CrowdsecSummary>,
    /// Every feed and import, by name.
    pub feeds: Vec<FeedStatus>,
}

/// The reply to `POST /v1/feeds/{name}/refresh`: the feed's status after the refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReply {
    /// `null` only if the feed was removed meanwhile (a reload).
    pub feed: Option<FeedStatus>,
}

/// `POST /v1/import`: load a list as the named set `feed:<name>`. (Fields in the daemon's
/// declaration order: serde's "unknown field" message lists them.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// 1 to 100 letters, digits, `-` and `_`; a later import with the same name replaces the
    /// set atomically.
    pub name: String,
    /// The list's format.
    #[serde(default)]
    pub format: FeedFormat,
    /// The list itself.
    pub text: String,
    /// Override the lockout guard.
    #[serde(default, skip_serializing_if = "crate::lists::is_false")]
    pub force: bool,
}

/// The reply to `POST /v1/import`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReply {
    /// Entries that were not blocked before.
    pub added: u64,
    /// Entries in the list.
    pub entries: u64,
    /// The import's name.
    pub name: String,
    /// Entries of the previous set that left the blocklist.
    pub removed: u64,
    /// How long it took.
    pub seconds: f64,
}
