//! The lists: adding and removing entries (`POST /v1/block`, `/v1/allow`, `/v1/unblock`,
//! `/v1/unallow`), listing them (`GET /v1/entries`) and asking why an address gets its
//! verdict (`GET /v1/why/{address}`).

use std::net::IpAddr;

use groundzero_common::{Action, Reason};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::source::Source;

/// Which list: the blocklist or the allowlist (`list` on the wire, `block` or `allow`): the
/// list vocabulary of `groundzero-common`, whose serde is the wire's.
pub use groundzero_common::lists::Side;

crate::labels::label_enum! {
    /// How an entry is stored: single addresses on the blocklist are `exact` (O(1) hash);
    /// everything else is a `prefix` (LPM trie).
    pub enum EntryKind as "entry kind" {
        /// A single address on the blocklist.
        Exact => "exact",
        /// A prefix, or any allowlist entry.
        Prefix => "prefix",
    }
}

/// An address family: the list vocabulary of `groundzero-common`. On the wire it is its
/// label (`ipv4`, `ipv6`), through [`crate::labels::family`].
pub use groundzero_common::lists::Family;

/// For `skip_serializing_if`: a flag that is off is left out of a request.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /v1/block` and `POST /v1/allow`: hold entries on a list. (Request fields keep the
/// order the daemon has always declared them in: serde's "unknown field" message lists them.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// Addresses or prefixes, as text: the daemon parses them strictly and names the index of
    /// a bad one (`entries[3]: ...`).
    pub entries: Vec<String>,
    /// Printable text, at most 400 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time to live, e.g. `90s`, `1h`, `7d` (1 s to 10 years). None: until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// `api` (the default), `manual`, `auto-ban` or `app:<name>`. Text, not a [`Source`]:
    /// the daemon checks it with [`Source::caller_settable`] and answers a bad one with its
    /// own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Override the lockout guard.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Apply nothing if the guard refuses any entry (409). Default: apply what the guard
    /// accepts and report each refused entry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_or_nothing: bool,
}

/// `POST /v1/unblock` and `POST /v1/unallow`: drop holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// Addresses or prefixes, as text.
    pub entries: Vec<String>,
    /// Only remove this source's hold (default: every non-feed hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What became of one entry of an add request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum EntryStatus {
    /// It was not on the list: it is now.
    Added,
    /// It was already on the list; this source's hold was added or renewed.
    Held,
    /// The guard refused it; nothing was changed for it.
    Refused {
        /// Which protected prefix it covers, and why that is protected.
        why: String,
    },
}

/// One entry of an add request and what became of it:
/// `{"entry": "198.51.100.7/32", "status": "refused", "why": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryOutcome {
    /// The entry, normalised.
    pub entry: IpNet,
    /// What happened to it.
    #[serde(flatten)]
    pub status: EntryStatus,
}

/// The reply to an add request. When the guard refused every entry it is the body of a 409,
/// with `error` set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReply {
    /// Entries that were not in the map before.
    pub added: u64,
    /// Entries now held by the caller (added or already on the list).
    pub applied: u64,
    /// Distinct entries in the request.
    pub entries: u64,
    /// Only on a 409: the first refusal, and that `force` would do it anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the hold expires (Unix seconds); `null` without a TTL.
    pub expires: Option<u64>,
    /// Entries the guard refused.
    pub refused: u64,
    /// Every distinct entry, in request order.
    pub results: Vec<EntryOutcome>,
}

impl AddReply {
    /// The refused entries, with why.
    pub fn refusals(&self) -> impl Iterator<Item = (IpNet, &str)> {
        self.results.iter().filter_map(|o| match &o.status {
            EntryStatus::Refused { why } => Some((o.entry, why.as_str())),
            _ => None,
        })
    }
}

/// The reply to a remove request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveReply {
    /// Entries that left their map.
    pub removed: Vec<IpNet>,
    /// Entries another holder keeps on the list.
    pub still_held: Vec<IpNet>,
}

/// One reason an entry is on a list: `{"source", "reason"?, "created", "expires"?}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the hold is removed at this time without anyone acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Why, in the holder's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who holds it.
    pub source: Source,
}

/// The query of `GET /v1/entries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Only this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Side>,
    /// Only entries with a holder matching this filter (see [`Source::matches_filter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// At most this many entries.
    #[serde(default = "EntriesQuery::default_limit")]
    pub limit: usize,
}

impl EntriesQuery {
    /// The limit when the query names none.
    pub const DEFAULT_LIMIT: usize = 10_000;

    fn default_limit() -> usize {
        Self::DEFAULT_LIMIT
    }

    /// The request path with this query, `source` percent-encoded.
    pub fn path(&self) -> String {
        let mut path = format!("{}?limit={}", crate::endpoints::ENTRIES, self.limit);
        if let Some(list) = self.list {
            path.push_str(&format!("&list={list}"));
        }
        if let Some(source) = &self.source {
            path.push_str("&source=");
            path.push_str(&percent_encode(source));
        }
        path
    }
}

impl Default for EntriesQuery {
    fn default() -> Self {
        Self {
            list: None,
            source: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An entry as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    /// The address or prefix.
    pub entry: IpNet,
    /// Packets it matched, counted by the XDP program.
    pub hits: u64,
    /// Everyone who holds it (feeds included).
    pub holders: Vec<Holder>,
    /// `exact` or `prefix`.
    pub kind: EntryKind,
    /// Seconds since the last hit, if it was ever hit.
    pub last_hit_seconds_ago: Option<f64>,
    /// Which list.
    pub list: Side,
}

/// The reply to `GET /v1/entries`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntriesReply {
    /// The entries, blocklist then allowlist, each in address order.
    pub entries: Vec<EntryView>,
}

/// The reply to `GET /v1/why/{address}`: what the XDP program does with packets from this
/// address right now, and which entry decides it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhyReply {
    /// The address asked about.
    pub address: IpAddr,
    /// Block entries that also cover the address but did not decide (e.g. under an allow).
    pub also_matching: Vec<EntryView>,
    /// The entry that decided; absent for `no_match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<EntryView>,
    /// Monitor mode is on (nothing is dropped).
    pub monitor: bool,
    /// The counter reason the XDP program would use.
    #[serde(with = "crate::labels::reason")]
    pub reason: Reason,
    /// `pass` or `drop`.
    #[serde(with = "crate::labels::action")]
    pub verdict: Action,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_query_path_encodes_the_source() {
        let q = EntriesQuery {
            list: Some(Side::Block),
            source: Some("feed:a b&c".into()),
            limit: 5,
        };
        assert_eq!(
            q.path(),
            "/v1/entries?limit=5&list=block&source=feed%3Aa%20b%26c"
        );
        assert_eq!(EntriesQuery::default().path(), "/v1/entries?limit=10000");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let e = serde_json::from_str::<AddRequest>(r#"{"entries": [], "sauce": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `sauce`"), "{e}");
        let r: AddRequest =
            serde_json::from_str(r#"{"entries": ["1.2.3.4"], "ttl": null}"#).unwrap();
        assert_eq!(r.entries, ["1.2.3.4"]);
        assert!(!r.force && r.ttl.is_none());
    }
}
