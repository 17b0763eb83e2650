//! Blocklist feeds: formats, fetching, and what a refresh reports.
//!
//! A feed's whole set is replaced atomically by the registry (new entries added first, stale ones
//! removed after), so a refresh never leaves a gap. A failed fetch or parse keeps the old set.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::entry::{parse_entry, EntryError};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One address or prefix per line; `#` and `;` comments.
    #[default]
    Plain,
    /// Spamhaus DROP / EDROP text: `prefix ; SBL id`, `;` comments. Every line must be a prefix.
    Spamhaus,
    /// FireHOL netset: one address or prefix per line, `#` comments.
    Firehol,
}

/// A parsed feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFeed {
    pub nets: Vec<IpNet>,
    /// Lines whose prefix had host bits set, stored normalised (third-party data: accept and say).
    pub normalised: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{origin}:{line}: {error}")]
    Line {
        origin: String,
        line: usize,
        error: EntryError,
    },
    #[error(
        "{origin}: no entries (an empty feed is refused rather than unblocking everything it held)"
    )]
    Empty { origin: String },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses a feed. All or nothing: the first bad line fails the whole feed.
pub fn parse_feed(text: &str, format: FeedFormat, origin: &str) -> Result<ParsedFeed, FeedError> {
    let comments: &[char] = match format {
        FeedFormat::Plain => &['#', ';'],
        FeedFormat::Spamhaus => &[';', '#'],
        FeedFormat::Firehol => &['#'],
    };
    let mut seen = std::collections::HashSet::new();
    let mut feed = ParsedFeed::default();
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split(comments).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let line_err = |error| FeedError::Line {
            origin: origin.to_string(),
            line: index + 1,
            error,
        };
        if format == FeedFormat::Spamhaus && !content.contains('/') {
            return Err(line_err(EntryError::Invalid {
                input: content.to_string(),
            }));
        }
        let net = match parse_entry(content) {
            Ok(net) => net,
            Err(EntryError::HostBits { suggestion, .. }) => {
                feed.normalised += 1;
                suggestion
            }
            Err(e) => return Err(line_err(e)),
        };
        if seen.insert(net) {
            feed.nets.push(net);
        }
    }
    if feed.nets.is_empty() {
        return Err(FeedError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(feed)
}

/// Reads a feed from an http(s) URL or a local path. Blocking: call from a blocking thread.
pub fn fetch(url: &str, timeout: Duration) -> Result<String, FeedError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        let response = agent
            .get(url)
            .set(
                "User-Agent",
                concat!("groundzero/", env!("CARGO_PKG_VERSION")),
            )
            .call()
            .map_err(|e| FeedError::Fetch {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut response.into_reader().take(512 << 20), &mut body)
            .map_err(|e| FeedError::Fetch {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(body)
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        std::fs::read_to_string(path).map_err(|source| FeedError::Read {
            path: path.to_string(),
            source,
        })
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamhaus_drop_format() {
        let text = "; Spamhaus DROP List 2026/11/23\n; Expires: ...\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n";
        let feed = parse_feed(text, FeedFormat::Spamhaus, "drop.txt").unwrap();
        assert_eq!(feed.nets.len(), 2);
        let err = parse_feed("1.2.3.4 ; SBL1\n", FeedFormat::Spamhaus, "drop.txt").unwrap_err();
        assert!(
            err.to_string().starts_with("drop.txt:1: `1.2.3.4`"),
            "{err}"
        );
    }

    #[test]
    fn firehol_netset_with_hosts_and_normalised_prefixes() {
        let text = "#\n# firehol_level1\n#\n192.0.2.7\n198.51.100.9/24\n2001:db8::/32\n";
        let feed = parse_feed(text, FeedFormat::Firehol, "level1.netset").unwrap();
        let shown: Vec<String> = feed.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"]);
        assert_eq!(feed.normalised, 1);
    }

    #[test]
    fn empty_and_bad_feeds_are_refused() {
        assert!(matches!(
            parse_feed("# nothing\n", FeedFormat::Plain, "x"),
            Err(FeedError::Empty { .. })
        ));
        let err = parse_feed("192.0.2.1\nbogus\n", FeedFormat::Plain, "x").unwrap_err();
        assert!(err.to_string().starts_with("x:2: `bogus`"), "{err}");
    }
}
