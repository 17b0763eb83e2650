//! `GET /v1/capture`: the query of a capture. The reply is not JSON but a pcapng stream
//! ([`PCAPNG_CONTENT_TYPE`]) that ends after `count` packets or `duration`, or when the client
//! goes away; packets carry their verdict, reason and matching entry as comments.

use serde::{Deserialize, Serialize};

/// The reply's media type.
pub const PCAPNG_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcapng";

/// Packets when the query names no `count`.
pub const DEFAULT_COUNT: u32 = 100;
/// The most packets one capture may ask for.
pub const MAX_COUNT: u32 = 1_000_000;
/// How long a capture runs when the query names no `duration`.
pub const DEFAULT_DURATION_S: u64 = 60;
/// The longest capture.
pub const MAX_DURATION_S: u64 = 3600;
/// Bytes of each packet kept when the query names no `snaplen`.
pub const DEFAULT_SNAPLEN: u32 = 256;
/// The largest snap length.
pub const MAX_SNAPLEN: u32 = 65_535;
/// Packets per second captured, at most, when the query names no `rate`.
pub const DEFAULT_RATE: u32 = 1000;
/// The highest capture rate.
pub const MAX_RATE: u32 = 100_000;

/// The query of `GET /v1/capture`. Every field is text, so that the daemon can answer a bad
/// one with a 400 naming it. (Fields in alphabetical order.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureQuery {
    /// Stop after this many packets (1..=[`MAX_COUNT`], default [`DEFAULT_COUNT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// Stop after this long (`30s`, `5m`; at most an hour, default a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Only packets arriving on this attached interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Packets per second at most (1..=[`MAX_RATE`]); the kernel skips and counts the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Only these reasons, comma-separated labels (`blocked_cidr,rate_limited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes of each packet to keep (1..=[`MAX_SNAPLEN`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<String>,
    /// Only sources inside this prefix (or this address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `drop` (the default), `pass` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl CaptureQuery {
    /// The request path with this query (values percent-encoded).
    pub fn path(&self) -> String {
        let pairs = [
            ("count", &self.count),
            ("duration", &self.duration),
            ("interface", &self.interface),
            ("rate", &self.rate),
            ("reason", &self.reason),
            ("snaplen", &self.snaplen),
            ("source", &self.source),
            ("verdict", &self.verdict),
        ];
        let query: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        if query.is_empty() {
            crate::endpoints::CAPTURE.to_string()
        } else {
            format!("{}?{}", crate::endpoints::CAPTURE, query.join("&"))
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_encodes_prefixes_and_lists() {
        let q = CaptureQuery {
            count: Some("5".into()),
            source: Some("2001:2::/48".into()),
            reason: Some("blocked_cidr,blocked_exact".into()),
            ..Default::default()
        };
        assert_eq!(
            q.path(),
            "/v1/capture?count=5&reason=blocked_cidr%2Cblocked_exact&source=2001%3A2%3A%3A%2F48"
        );
        assert_eq!(CaptureQuery::default().path(), "/v1/capture");
    }
}
